"""Keep the credentials in camera URLs out of log lines, error messages and health reports."""

from __future__ import annotations

import logging
import re
import traceback

# user[:password]@ after a scheme. The password part runs to the LAST "@" of the
# whitespace-free token, so a password with an unescaped "@" or "/" in it is still
# hidden whole; the price is that a rare "@" later in a path hides a little too much.
_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)"
    r"(?P<userinfo>[^\s/?#@:'\"<>]*(?::[^\s'\"<>]*)?)@"
)
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pass|pwd|secret|token|access_token|auth|api_?key)=)"
    r"[^&#\s'\"<>]*",
    re.IGNORECASE,
)

MASK = "***"


def scrub_url(text: str) -> str:
    """Return `text` with every URL's `user:password@` replaced by `***@` and the
    values of password-like query parameters (`password=`, `token=`, ...) by `***`."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group('key')}{MASK}", text)


class ScrubbingFilter(logging.Filter):
    """Scrub credentials from a log record's message, arguments, traceback and stack.

    Attach it to the handlers (`handler.addFilter(ScrubbingFilter())`): a filter on
    a logger sees only records logged to that very logger, not those that propagate
    up from its children. The package also puts one on its own loggers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it, minus secrets
            message = f"{record.msg} {record.args!r}"
        clean = scrub_url(message)
        if clean != message:
            # Merging args into the message is the only way to be sure that no
            # handler formats the raw arguments again later.
            record.msg, record.args = clean, None
        if record.exc_info:
            text = record.exc_text or "".join(traceback.format_exception(*record.exc_info))
            clean_text = scrub_url(text.rstrip("\n"))
            if clean_text != text.rstrip("\n"):
                # Formatters reuse exc_text when it is set; dropping exc_info stops
                # any handler from rendering the raw exception again.
                record.exc_text, record.exc_info = clean_text, None
        elif record.exc_text:
            record.exc_text = scrub_url(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub_url(record.stack_info)
        return True

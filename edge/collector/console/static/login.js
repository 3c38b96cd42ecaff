// Sign-in: post the name and password as JSON; on success the server sets the session cookie.
// In the browser's language (the user's own is known only once signed in).
"use strict";
(function () {
  const i18n = window.ConsoleI18n;
  const t = (key) => (i18n ? i18n.t(key) : null);
  if (i18n) {
    i18n.load(null).then(() => {
      i18n.apply();
      document.title = `${t("login.title")} - ${t("app.full_title")}`;
    }).catch(() => { /* the English in the page stays */ });
  }
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const body = {
      name: document.getElementById("login-name").value,
      password: document.getElementById("login-password").value,
    };
    let res;
    try {
      res = await fetch("/api/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (e) {
      error.textContent = t("login.unreachable") || "The console cannot be reached.";
      error.hidden = false;
      return;
    }
    if (res.ok) {
      window.location.assign("/");
      return;
    }
    let message = t("login.failed") || "Sign-in failed.";
    try {
      message = (await res.json()).error || message;
    } catch (e) { /* not JSON */ }
    error.textContent = message;
    error.hidden = false;
  });
})();

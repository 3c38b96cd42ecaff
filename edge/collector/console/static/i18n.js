// The console's words: one ICU MessageFormat catalogue (JSON) per language in /static/i18n/,
// formatted here with the browser's Intl (plural rules, numbers, dates) in the user's locale.
// Understood: {name}, {n, number}, {n, plural, =0 {..} one {..} other {..}} with #, and
// {x, select, a {..} other {..}}.  A key a catalogue lacks falls back to English and is
// noted in `missing` (the browser tests look).
"use strict";
(function () {
  const LOCALES = { en: "en-GB", lt: "lt-LT", lv: "lv-LV", pl: "pl-PL", bg: "bg-BG", tr: "tr-TR" };
  const NAMES = { en: "English", lt: "Lietuvių", lv: "Latviešu", pl: "Polski", bg: "Български", tr: "Türkçe" };
  const I = { lang: "en", locale: "en-GB", messages: {}, english: {}, parsed: new Map(), missing: [] };

  function parse(src) {
    let i = 0;
    const fail = (why) => { throw new Error(`${why} at ${i} in ${JSON.stringify(src)}`); };
    const space = () => { while (i < src.length && /\s/.test(src[i])) i++; };
    function word() {
      space();
      const start = i;
      while (i < src.length && !/[\s,{}]/.test(src[i])) i++;
      if (i === start) fail("a name expected");
      const w = src.slice(start, i);
      space();
      return w;
    }
    function expect(c) { space(); if (src[i] !== c) fail(`'${c}' expected`); i++; }
    function text(inPlural) {
      const parts = [];
      let buf = "";
      while (i < src.length && src[i] !== "}") {
        const c = src[i];
        if (c === "{") {
          if (buf) { parts.push(buf); buf = ""; }
          i++;
          parts.push(arg(inPlural));
        } else if (c === "#" && inPlural) {
          if (buf) { parts.push(buf); buf = ""; }
          parts.push({ hash: true });
          i++;
        } else {
          buf += c;
          i++;
        }
      }
      if (buf) parts.push(buf);
      return parts;
    }
    function arg(inPlural) {
      const name = word();
      if (src[i] === "}") { i++; return { name }; }
      expect(",");
      const type = word();
      if (src[i] === "}") { i++; return { name, type }; }
      expect(",");
      if (type !== "plural" && type !== "select") fail(`unknown type ${type}`);
      const options = {};
      for (;;) {
        space();
        if (src[i] === "}") { i++; break; }
        const sel = word();
        expect("{");
        options[sel] = text(type === "plural" || inPlural);
        expect("}");
      }
      if (!options.other) fail("an 'other' option expected");
      return { name, type, options };
    }
    const out = text(false);
    if (i < src.length) fail("unmatched '}'");
    return out;
  }

  function number(n) {
    return typeof n === "number" ? new Intl.NumberFormat(I.locale).format(n) : String(n);
  }

  function render(parts, args, count) {
    let out = "";
    for (const p of parts) {
      if (typeof p === "string") { out += p; continue; }
      if (p.hash) { out += number(count); continue; }
      const v = args[p.name];
      if (!p.type) out += v === undefined || v === null ? "" : (typeof v === "number" ? number(v) : String(v));
      else if (p.type === "number") out += number(Number(v));
      else if (p.type === "plural") {
        const n = Number(v);
        const branch = p.options[`=${n}`] || p.options[new Intl.PluralRules(I.locale).select(n)] || p.options.other;
        out += render(branch, args, n);
      } else {
        out += render(p.options[String(v)] || p.options.other, args, count);
      }
    }
    return out;
  }

  function t(key, args) {
    let src = I.messages[key];
    if (src === undefined) {
      if (!I.missing.includes(key)) I.missing.push(key);
      src = I.english[key];
      if (src === undefined) return key;
    }
    const cacheKey = `${src === I.messages[key] ? I.lang : "en"}:${key}`;
    let parts = I.parsed.get(cacheKey);
    if (!parts) {
      parts = parse(src);
      I.parsed.set(cacheKey, parts);
    }
    return render(parts, args || {}, 0);
  }

  async function fetchCatalogue(lang) {
    const res = await fetch(`/static/i18n/${lang}.json`, { credentials: "same-origin" });
    if (!res.ok) throw new Error(`no catalogue ${lang}: ${res.status}`);
    return res.json();
  }

  // The user's language if chosen, else the first of the browser's the console has.
  function choose(chosen) {
    if (chosen && LOCALES[chosen]) return chosen;
    for (const l of navigator.languages || [navigator.language || "en"]) {
      const base = String(l).toLowerCase().split("-")[0];
      if (LOCALES[base]) return base;
    }
    return "en";
  }

  async function load(chosen) {
    const lang = choose(chosen);
    const [english, messages] = await Promise.all([
      fetchCatalogue("en"), lang === "en" ? null : fetchCatalogue(lang).catch(() => null),
    ]);
    I.english = english;
    I.messages = messages || english;
    I.lang = messages || lang === "en" ? lang : "en";
    I.locale = LOCALES[I.lang];
    I.parsed.clear();
    I.missing = [];
    document.documentElement.lang = I.lang;
    return I.lang;
  }

  // Elements say which key they show: data-i18n (text), data-i18n-title, -placeholder, -label.
  function apply(root) {
    for (const node of (root || document).querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const node of (root || document).querySelectorAll("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
    for (const node of (root || document).querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
    for (const node of (root || document).querySelectorAll("[data-i18n-label]")) node.setAttribute("aria-label", t(node.dataset.i18nLabel));
  }

  const dateTime = (d) => new Intl.DateTimeFormat(I.locale, { dateStyle: "short", timeStyle: "medium" }).format(d);

  function ago(date) {
    const s = Math.round((Date.now() - date.getTime()) / 1000);
    const rtf = new Intl.RelativeTimeFormat(I.locale, { numeric: "auto" });
    if (s < 90) return rtf.format(-Math.max(s, 0), "second");
    if (s < 5400) return rtf.format(-Math.round(s / 60), "minute");
    if (s < 172800) return rtf.format(-Math.round(s / 3600), "hour");
    return rtf.format(-Math.round(s / 86400), "day");
  }

  window.ConsoleI18n = {
    LOCALES, NAMES, t, load, apply, parse, dateTime, ago, number, choose,
    get lang() { return I.lang; }, get locale() { return I.locale; },
    get missing() { return I.missing.slice(); }, keys: () => Object.keys(I.english),
  };
})();

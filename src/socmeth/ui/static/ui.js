// socmeth dashboard: live sections and local times. No library, no build step.
//
// A live section is an element with data-live-src: the URL of its server-rendered
// partial. It is fetched every 2 s while the tab is visible and every 30 s while it
// is hidden, and swapped in only when the markup changed, so that focus and text
// selection survive quiet refreshes.
"use strict";

(() => {
  const VISIBLE_MS = 2000;
  const HIDDEN_MS = 30000;
  const SEARCH_DELAY_MS = 250;
  const lastMarkup = new WeakMap();
  let timer = null;

  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const absolute = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  const full = new Intl.DateTimeFormat(undefined, {
    dateStyle: "full", timeStyle: "long",
  });
  const UNITS = [
    ["year", 365 * 24 * 3600], ["month", 30 * 24 * 3600], ["day", 24 * 3600],
    ["hour", 3600], ["minute", 60], ["second", 1],
  ];

  // Say how far an instant is from now: "in 3 minutes", "2 minutes ago", "now".
  function fromNow(instant) {
    const seconds = (instant.getTime() - Date.now()) / 1000;
    if (Math.abs(seconds) < 5) return relative.format(0, "second");
    for (const [unit, size] of UNITS) {
      if (Math.abs(seconds) >= size || unit === "second") {
        return relative.format(Math.round(seconds / size), unit);
      }
    }
    return "";
  }

  // Show each <time datetime> in the viewer's zone with its distance from now.
  function showTimes(root) {
    for (const element of root.querySelectorAll("time[datetime]")) {
      const instant = new Date(element.getAttribute("datetime"));
      if (Number.isNaN(instant.getTime())) continue;
      element.title = `${full.format(instant)} (${element.getAttribute("datetime")})`;
      element.textContent = absolute.format(instant);
      const rel = document.createElement("span");
      rel.className = "rel";
      rel.textContent = fromNow(instant);
      element.append(rel);
    }
  }

  function setStatus(text, stale) {
    const status = document.getElementById("live-status");
    if (!status) return;
    status.hidden = false;
    status.textContent = text;
    status.classList.toggle("stale", stale);
  }

  // Fetch one section's partial and swap it in when it changed.
  async function refresh(section) {
    const response = await fetch(section.dataset.liveSrc, {
      headers: { Accept: "text/html" },
      cache: "no-store",
    });
    if (!response.ok) throw new Error(`${response.status} from ${section.dataset.liveSrc}`);
    const markup = await response.text();
    if (lastMarkup.get(section) === markup) return;
    lastMarkup.set(section, markup);
    section.innerHTML = markup;
  }

  async function refreshAll() {
    const sections = [...document.querySelectorAll("[data-live-src]")];
    const results = await Promise.allSettled(sections.map(refresh));
    const failed = results.find((result) => result.status === "rejected");
    showTimes(document);
    const at = new Date().toLocaleTimeString();
    if (failed) setStatus(`Live updates failing since ${at}: ${failed.reason.message}`, true);
    else setStatus(`Live · updated ${at}`, false);
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      await refreshAll();
      schedule(document.visibilityState === "visible" ? VISIBLE_MS : HIDDEN_MS);
    }, delay);
  }

  // A filter form with data-live-form narrows its section as the user types,
  // keeping the address bar in step so that the view can be shared or reloaded.
  function wireFilters(form) {
    const section = document.getElementById(form.dataset.liveForm);
    if (!section) return;
    let pending = null;
    const apply = () => {
      const query = new URLSearchParams();
      for (const [name, value] of new FormData(form)) {
        if (value !== "") query.append(name, value);
      }
      const path = form.getAttribute("action");
      history.replaceState(null, "", query.size ? `${path}?${query}` : path);
      query.append("partial", section.id.replace(/^live-/, ""));
      section.dataset.liveSrc = `${path}?${query}`;
      schedule(0);
    };
    form.addEventListener("input", () => {
      clearTimeout(pending);
      pending = setTimeout(apply, SEARCH_DELAY_MS);
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      clearTimeout(pending);
      apply();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    showTimes(document);
    document.querySelectorAll("form[data-live-form]").forEach(wireFilters);
    if (!document.querySelector("[data-live-src]")) return;
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") schedule(0);
      else schedule(HIDDEN_MS);
    });
    schedule(VISIBLE_MS);
  });
})();

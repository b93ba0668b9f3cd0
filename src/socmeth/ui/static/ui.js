// socmeth dashboard: live sections, local times and the job form. No library, no
// build step.
//
// A live section is an element with data-live-src: the URL of its server-rendered
// partial. It is fetched every 2 s while the tab is visible and every 30 s while it
// is hidden, and swapped in only when the markup changed, so that focus and text
// selection survive quiet refreshes. A section whose markup holds data-live-done
// (an ended run, its output) is final and is no longer fetched.
"use strict";

(() => {
  const VISIBLE_MS = 2000;
  const HIDDEN_MS = 30000;
  const SEARCH_DELAY_MS = 250;
  const PREVIEW_DELAY_MS = 250;
  const lastMarkup = new WeakMap();
  let timer = null;
  let failingSince = null;

  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const absolute = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  const absoluteWithYear = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
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

  // Format instants in a given IANA zone, or in the viewer's when the browser
  // does not know it.
  const zoned = new Map();
  function inZone(zone, withYear) {
    const key = `${zone} ${withYear}`;
    if (!zoned.has(key)) {
      try {
        zoned.set(key, new Intl.DateTimeFormat(undefined, {
          weekday: "short", year: withYear ? "numeric" : undefined,
          month: "short", day: "numeric",
          hour: "2-digit", minute: "2-digit", second: "2-digit",
          timeZone: zone, timeZoneName: "short",
        }));
      } catch (error) {
        zoned.set(key, withYear ? absoluteWithYear : absolute);
      }
    }
    return zoned.get(key);
  }

  // Dates of another year say which.
  function formatterFor(instant, zone) {
    const withYear = instant.getFullYear() !== new Date().getFullYear();
    if (zone) return inZone(zone, withYear);
    return withYear ? absoluteWithYear : absolute;
  }

  // Show each <time datetime> in the viewer's zone (or in its data-zone, a job's
  // time zone) with its distance from now.
  function showTimes(root) {
    for (const element of root.querySelectorAll("time[datetime]")) {
      const instant = new Date(element.getAttribute("datetime"));
      if (Number.isNaN(instant.getTime())) continue;
      const zone = element.dataset.zone;
      element.title = `${full.format(instant)} (${element.getAttribute("datetime")})`;
      element.textContent = formatterFor(instant, zone).format(instant);
      const rel = document.createElement("span");
      rel.className = "rel";
      rel.textContent = fromNow(instant);
      element.append(" ", rel);
    }
  }

  function setStatus(text, stale) {
    const status = document.getElementById("live-status");
    if (!status) return;
    status.hidden = false;
    status.textContent = text;
    status.classList.toggle("stale", stale);
  }

  // Name the focused element of a section so that its copy in new markup can be
  // found: by id, by a link's href, by a form's action and button.
  function focusKey(section) {
    const focused = document.activeElement;
    if (!focused || focused === document.body || !section.contains(focused)) return null;
    if (focused.id) return `#${CSS.escape(focused.id)}`;
    if (focused.matches("a[href]")) return `a[href="${CSS.escape(focused.getAttribute("href"))}"]`;
    const form = focused.closest("form[action]");
    if (form && focused.matches("button")) {
      return `form[action="${CSS.escape(form.getAttribute("action"))}"] button`;
    }
    return null;
  }

  // Swap a section's markup keeping what the reader was at: the focused control,
  // and each output's scroll (its end while they follow it, else where it was).
  function swapKeeping(section, markup) {
    const key = focusKey(section);
    const outputs = [...section.querySelectorAll("pre.output")].map((pre) => ({
      atEnd: pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8,
      top: pre.scrollTop,
    }));
    const graphs = [...section.querySelectorAll(".graph-canvas")].map((canvas) => ({
      left: canvas.scrollLeft,
      top: canvas.scrollTop,
    }));
    section.innerHTML = markup;
    section.querySelectorAll("pre.output").forEach((pre, index) => {
      const was = outputs[index];
      pre.scrollTop = !was || was.atEnd ? pre.scrollHeight : was.top;
    });
    section.querySelectorAll(".graph-canvas").forEach((canvas, index) => {
      const was = graphs[index];
      if (was) canvas.scrollTo(was.left, was.top);
      else centreGraphs(canvas.parentElement);
    });
    if (key) section.querySelector(key)?.focus({ preventScroll: true });
  }

  // A reader selecting text in a section would lose the selection to a swap.
  function selectingIn(section) {
    const selection = window.getSelection();
    return selection && !selection.isCollapsed && selection.rangeCount > 0 &&
      section.contains(selection.getRangeAt(0).commonAncestorContainer);
  }

  function isFinal(section) {
    return section.dataset.liveGone === "true" ||
      section.querySelector("[data-live-done]") !== null;
  }

  // Fetch one section's partial and swap it in when it changed.
  async function refresh(section) {
    if (isFinal(section) || selectingIn(section)) return;
    const response = await fetch(section.dataset.liveSrc, {
      headers: { Accept: "text/html" },
      cache: "no-store",
    });
    if (response.status === 401) {
      // The session ended: the page itself now answers with the login form.
      window.location.reload();
      return;
    }
    if (response.status === 404) {
      // The job or run of this page was deleted or renamed: nothing more comes.
      section.dataset.liveGone = "true";
      return;
    }
    if (!response.ok) throw new Error(`${response.status} from ${section.dataset.liveSrc}`);
    const markup = await response.text();
    if (lastMarkup.get(section) === markup) return;
    lastMarkup.set(section, markup);
    swapKeeping(section, markup);
  }

  async function refreshAll() {
    const sections = [...document.querySelectorAll("[data-live-src]")];
    const results = await Promise.allSettled(sections.map(refresh));
    const failed = results.find((result) => result.status === "rejected");
    showTimes(document);
    const at = new Date().toLocaleTimeString();
    if (failed) failingSince ??= at;
    else failingSince = null;
    if (failed) {
      setStatus(`Live updates failing since ${failingSince}: ${failed.reason.message}`, true);
    } else if (sections.some((section) => section.dataset.liveGone === "true")) {
      setStatus("What this page shows was deleted or renamed; reload to see more", true);
    } else if (sections.every(isFinal)) {
      setStatus("Final · nothing here changes any more", false);
    } else {
      setStatus(`Live · updated ${at}`, false);
    }
    return sections.every(isFinal);
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (await refreshAll()) return;
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

  // The job form: show the inputs of the chosen job type only.
  function wireTypes(form) {
    const show = () => {
      const chosen = form.querySelector("input[name=type]:checked");
      if (!chosen) return;
      for (const part of form.querySelectorAll("[data-types]")) {
        part.hidden = !part.dataset.types.split(" ").includes(chosen.value);
      }
    };
    form.addEventListener("change", (event) => {
      if (event.target.name === "type") show();
    });
    show();
  }

  // The job form: read the schedule back in plain words with its next fires as
  // it is typed. The server renders the preview (the form's own partial), from the
  // same reading as GET /api/schedules/preview.
  function wirePreview(form) {
    const schedule = form.querySelector("[data-preview-schedule]");
    const zone = form.querySelector("[data-preview-timezone]");
    const preview = document.getElementById("schedule-preview");
    if (!schedule || !zone || !preview) return;
    let pending = null;
    let asked = 0;

    const update = async () => {
      const query = new URLSearchParams({ schedule: schedule.value, timezone: zone.value });
      if (preview.dataset.job) query.set("job", preview.dataset.job);
      const mine = ++asked;
      try {
        const response = await fetch(`${preview.dataset.previewSrc}?${query}`, {
          headers: { Accept: "text/html" },
        });
        const markup = await response.text();
        if (mine !== asked) return; // a newer keystroke's answer follows
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        preview.innerHTML = markup;
        showTimes(preview);
      } catch (error) {
        if (mine !== asked) return;
        const failed = document.createElement("p");
        failed.className = "preview-error";
        failed.textContent = `No preview: ${error.message}`;
        preview.replaceChildren(failed);
      }
    };
    const later = () => {
      clearTimeout(pending);
      pending = setTimeout(update, PREVIEW_DELAY_MS);
    };
    schedule.addEventListener("input", later);
    zone.addEventListener("input", later);
    zone.addEventListener("change", later);
  }

  // A graph wider than its box opens on the page's own job.
  function centreGraphs(root) {
    for (const canvas of root.querySelectorAll(".graph-canvas")) {
      const current = canvas.querySelector(".graph-job.current rect");
      const overflows = canvas.scrollWidth > canvas.clientWidth ||
        canvas.scrollHeight > canvas.clientHeight;
      if (!current || !overflows) continue;
      const box = current.getBoundingClientRect();
      const frame = canvas.getBoundingClientRect();
      canvas.scrollLeft += box.left - frame.left - (frame.width - box.width) / 2;
      canvas.scrollTop += box.top - frame.top - (frame.height - box.height) / 2;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    showTimes(document);
    centreGraphs(document);
    document.querySelectorAll("form[data-live-form]").forEach(wireFilters);
    document.querySelectorAll("form[data-job-form]").forEach((form) => {
      wireTypes(form);
      wirePreview(form);
    });
    document.getElementById("error-summary")?.focus();
    if (!document.querySelector("[data-live-src]")) return;
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") schedule(0);
      else schedule(HIDDEN_MS);
    });
    schedule(VISIBLE_MS);
  });
})();

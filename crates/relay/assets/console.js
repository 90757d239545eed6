// The console's only script. Pages work without it; it adds two things:
// - buttons with data-copy="ID" copy the text of element ID;
// - a region marked data-live reloads its own content from the server:
//   every data-live-every milliseconds, and at once whenever the
//   server-sent events at data-live-events announce a change. It stops
//   when the content it gets is marked data-live-finished, and waits while
//   focus is on something inside it.
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  try {
    await navigator.clipboard.writeText(source.textContent.trim());
    button.textContent = "Copied";
  } catch {
    // No clipboard here (an insecure context): select the text to copy by hand.
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
});

function live(region) {
  let timer = null;
  let events = null;
  let busy = false;
  let again = false;

  const stop = () => {
    clearInterval(timer);
    if (events) events.close();
  };

  const refresh = async () => {
    if (busy) { again = true; return; }
    // Someone is on a button or field in here (by keyboard, say): replacing
    // it would lose their place. The next tick tries again.
    if (region.contains(document.activeElement) && document.activeElement !== region) return;
    busy = true;
    try {
      const response = await fetch(window.location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
      if (new URL(response.url).pathname === "/sign-in") { window.location.assign(response.url); return; }
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById(region.id);
      if (!fresh) return;
      if (fresh.innerHTML !== region.innerHTML) {
        region.innerHTML = fresh.innerHTML;
        // Screen readers hear that the page changed, politely.
        const status = document.getElementById("live-status");
        if (status) status.textContent = `Updated at ${new Date().toLocaleTimeString()}`;
      }
      if (fresh.hasAttribute("data-live-finished")) { region.setAttribute("data-live-finished", ""); stop(); }
    } catch {
      // The relay is restarting or the network is down: the next tick tries again.
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  };

  if (region.hasAttribute("data-live-finished")) return;
  const every = Number(region.dataset.liveEvery || 0);
  if (every > 0) timer = setInterval(() => { if (!document.hidden) refresh(); }, every);
  if (region.dataset.liveEvents) {
    events = new EventSource(region.dataset.liveEvents);
    events.addEventListener("change", refresh);
  }
}

document.querySelectorAll("[data-live][id]").forEach(live);

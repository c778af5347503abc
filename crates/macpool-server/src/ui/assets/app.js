// macpool dashboard: progressive enhancement only. Every page works without this file.
"use strict";

// The map's side panel: a click on a cell shows who has the address without leaving the map.
function panel() {
  const aside = document.getElementById("panel");
  if (!aside) return;
  document.querySelectorAll(".grid a.cell[data-mac]").forEach((cell) => {
    cell.addEventListener("click", async (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
      ev.preventDefault();
      document.querySelectorAll(".grid a.selected").forEach((c) => c.classList.remove("selected"));
      cell.classList.add("selected");
      const res = await fetch("/mac/" + encodeURIComponent(cell.dataset.mac) + "/panel", {
        credentials: "same-origin",
      });
      if (!res.ok) {
        aside.textContent = "Could not load " + cell.dataset.mac + " (" + res.status + ")";
        return;
      }
      // same-origin HTML rendered (and escaped) by the server
      aside.innerHTML = await res.text();
      wireCopy(aside);
    });
  });
}

// Copy buttons: copy the MAC spelling next to them.
function wireCopy(root) {
  root.querySelectorAll("button.copy[data-copy]").forEach((b) => {
    b.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(b.dataset.copy);
        b.textContent = "copied";
      } catch (e) {
        b.textContent = "select and copy";
      }
    });
  });
}

// The conflicts page asks for its count every 10 s; when it changed, it fetches the page again
// and swaps in the new content and tab title, without a reload (no flash, the scroll stays).
function poll() {
  const live = document.querySelector("[data-poll]");
  if (!live) return;
  const url = live.dataset.poll;
  setInterval(async () => {
    const badge = document.getElementById("conflict-count");
    const main = document.getElementById("main");
    if (!badge || !main) return;
    try {
      const res = await fetch(url, { credentials: "same-origin" });
      if (!res.ok) return;
      const { count } = await res.json();
      if (String(count) === badge.dataset.count) return;
      const page = await fetch(window.location.href, { credentials: "same-origin" });
      if (!page.ok) return;
      // same-origin HTML rendered (and escaped) by the server; parsed, its scripts never run
      const fresh = new DOMParser().parseFromString(await page.text(), "text/html");
      const content = fresh.getElementById("main");
      if (!content) return;
      main.replaceChildren(...content.childNodes);
      document.title = fresh.title;
      wireCopy(main);
    } catch (e) {
      /* offline for a moment: try again next time */
    }
  }, 10000);
}

document.addEventListener("DOMContentLoaded", () => {
  panel();
  wireCopy(document);
  poll();
});

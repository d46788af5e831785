/* Live updates for the console: poll the page's ?live=1 JSON and swap panels whose
 * server-rendered HTML changed. A panel the person is working in (focused field,
 * typed notes, form errors shown) is left alone until they are done. */
(function () {
  "use strict";
  var body = document.body;
  var url = body.getAttribute("data-live-url");
  var interval = parseInt(body.getAttribute("data-poll-ms"), 10) || 2500;
  var indicator = document.getElementById("live-indicator");
  var statusText = document.getElementById("live-status");
  var last = {};
  var failures = 0;
  var timer = null;

  function busy(panel) {
    if (panel.querySelector("[data-hold], details[open]")) return true;
    var active = document.activeElement;
    if (active && active !== body && panel.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) return true;
    var fields = panel.querySelectorAll("textarea, input[type=text], input[type=number]");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value !== fields[i].defaultValue) return true;
    }
    return false;
  }

  function show(ok, text) {
    if (indicator) {
      indicator.hidden = false;
      indicator.classList.toggle("stale", !ok);
      indicator.querySelector(".live-text").textContent = ok ? "live" : "reconnecting";
    }
    if (statusText) statusText.textContent = text ? " · " + text : "";
  }

  function apply(data) {
    var panels = data.panels || {};
    Object.keys(panels).forEach(function (name) {
      var html = panels[name];
      var node = document.querySelector('[data-panel="' + name + '"]');
      if (!node || last[name] === html) return;
      if (busy(node)) return;
      var first = !(name in last);
      last[name] = html;
      if (first && node.innerHTML.trim() === html.trim()) return;
      node.innerHTML = html;
      refreshTimes();
      node.classList.remove("swapped");
      void node.offsetWidth; // restart the highlight animation
      node.classList.add("swapped");
    });
    body.setAttribute("data-live-updated", data.generated_at || "");
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(poll, delay);
  }

  function poll() {
    if (document.hidden) return schedule(interval);
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          window.location.reload(); // signed out elsewhere: go to the login page
          throw new Error("signed out");
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        failures = 0;
        apply(data);
        var when = (data.generated_at || "").replace("T", " ").slice(11, 19);
        show(true, when ? "updated " + when + " UTC" : "");
        schedule(interval);
      })
      .catch(function (err) {
        failures += 1;
        show(false, "live updates paused (" + err.message + "), retrying");
        schedule(Math.min(30000, interval * Math.pow(2, failures)));
      });
  }

  /* "3 s ago" instead of the server's "0 minutes ago"; data-rel="for" gives "3 s". */
  function ago(seconds) {
    if (seconds < 60) return Math.max(0, Math.round(seconds)) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
    return Math.floor(seconds / 86400) + " d";
  }
  function refreshTimes() {
    var now = Date.now();
    var nodes = document.querySelectorAll("time[data-rel]");
    for (var i = 0; i < nodes.length; i++) {
      var at = Date.parse(nodes[i].getAttribute("datetime"));
      if (isNaN(at)) continue;
      var text = ago((now - at) / 1000);
      nodes[i].textContent = nodes[i].getAttribute("data-rel") === "for" ? text : text + " ago";
      nodes[i].title = new Date(at).toISOString().replace("T", " ").slice(0, 19) + " UTC";
    }
  }
  refreshTimes();
  setInterval(refreshTimes, 1000);

  /* A form with data-confirm asks first (no inline onsubmit: the CSP forbids inline script). */
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  }, true);

  if (!url) return;
  document.addEventListener("visibilitychange", function () { if (!document.hidden) schedule(0); });
  schedule(interval);
})();

// Live case updates: the gateway's WatchCase stream, relayed as server-sent events.
// Each event fetches the case's panel again and says what changed (aria-live).
const live = document.getElementById("case-live");
const status = document.getElementById("live-status");
if (live && status && "EventSource" in window) {
  const source = new EventSource(live.dataset.eventsUrl);
  source.addEventListener("case", async (message) => {
    let kind = "";
    try { kind = JSON.parse(message.data).event_kind || ""; } catch { kind = ""; }
    const answer = await fetch(live.dataset.panelUrl, { credentials: "same-origin" });
    if (!answer.ok) return;
    live.innerHTML = await answer.text();
    let labels = {};
    try { labels = JSON.parse(status.dataset.eventLabels || "{}"); } catch { labels = {}; }
    status.textContent = status.dataset.textUpdated.replace("{event}", labels[kind] || kind);
  });
  // A 401 (the session ended) or a stream the console closed: say so, once.
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) status.textContent = status.dataset.textLost;
  };
  source.addEventListener("refused", () => {
    status.textContent = status.dataset.textLost;
    source.close();
  });
}

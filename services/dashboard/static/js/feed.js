// Whether live events are really arriving, and when the page must reload
// from the API (docs/realtime.md, "When Redis goes away").
//
// An open socket is not enough: the server relays events through Redis, and
// while Redis is down the socket stays up and simply hears nothing. So the
// server numbers every event (`feed: {stream, audience, seq}`) and the events
// leader beats every second or so (`live_heartbeat`, with each audience's
// position). This watch says "interrupted" when beats stop, and asks the
// views to reload ("resync") when the feed comes back, when a number was
// skipped, or when the server says it dropped events (`live_resync`).

const CHECK_MS = 500;
// A page hidden this long may have been frozen or asleep: reload on return.
const HIDDEN_RESYNC_MS = 60000;

export class FeedWatch {
  constructor(socket) {
    this.socket = socket;
    this.positions = new Map(); // "stream/audience" -> last number seen
    this.lastBeat = 0;
    this.every = 1; // seconds, as the server says in each beat
    this.since = Date.now(); // since when we have been waiting for a beat
    this.state = "waiting"; // waiting (not live yet) | live | interrupted
    this.hiddenAt = null;
    this.offs = [
      socket.on("*", (ev) => this.seen(ev.event, ev.data)),
      socket.on("_state", () => this.check()),
      socket.on("connect", (info) => {
        this.since = Date.now();
        // Whatever the beats say, the socket was away: reload what is shown.
        if (info && info.reconnect) this.resync("reconnected");
      }),
    ];
    this.onVisibility = () => this.visibility();
  }

  start() {
    this.timer = setInterval(() => this.check(), CHECK_MS);
    document.addEventListener("visibilitychange", this.onVisibility);
  }

  stop() {
    clearInterval(this.timer);
    document.removeEventListener("visibilitychange", this.onVisibility);
    this.offs.forEach((off) => off());
  }

  // How long without a beat before the feed counts as interrupted.
  windowMs() {
    return (3 * this.every + 1) * 1000;
  }

  seen(event, data) {
    if (!data || typeof data !== "object") return;
    if (event === "live_heartbeat") {
      const every = Number(data.every);
      if (Number.isFinite(every) && every > 0) this.every = Math.min(every, 60);
      this.lastBeat = Date.now();
      this.advance(data, false);
      this.check();
    } else if (event === "live_interrupted") {
      // Our API process lost Redis: no need to wait for the beats' silence.
      this.lastBeat = 0;
      this.check();
    } else if (event === "live_resync") {
      const seq = Number(data.seq);
      if (Number.isFinite(seq)) this.positions.set(`${data.stream}/${data.audience}`, seq);
      this.resync("the server dropped events");
    } else if (data.feed && typeof data.feed === "object") {
      this.advance(data.feed, true);
    }
  }

  // An event carries its own number; a beat the number of the last event
  // sent. A number past the next one expected means something was missed.
  advance(pos, isEvent) {
    const seq = Number(pos.seq);
    if (!Number.isFinite(seq)) return;
    const key = `${pos.stream}/${pos.audience}`;
    const last = this.positions.get(key);
    if (last === undefined || seq > last) this.positions.set(key, seq);
    // While interrupted, the return of the feed reloads anyway.
    if (last !== undefined && seq > last + (isEvent ? 1 : 0) && this.state === "live") {
      this.resync(`missed ${seq - last - (isEvent ? 1 : 0)} event(s)`);
    }
  }

  check() {
    const now = Date.now();
    const online = this.socket.state === "online";
    const fresh = online && now - this.lastBeat < this.windowMs();
    if (fresh) {
      if (this.state !== "live") {
        const wasInterrupted = this.state === "interrupted";
        this.setState("live");
        if (wasInterrupted) this.resync("the live feed is back");
      }
    } else if (this.state === "live" || now - this.since > this.windowMs()) {
      this.setState("interrupted");
    }
  }

  visibility() {
    if (document.visibilityState === "hidden") {
      this.hiddenAt = Date.now();
    } else {
      const away = this.hiddenAt === null ? 0 : Date.now() - this.hiddenAt;
      this.hiddenAt = null;
      this.check();
      if (away > HIDDEN_RESYNC_MS && this.state === "live") this.resync("the page was in the background");
    }
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.socket.emitLocal("_feed", state);
  }

  resync(reason) {
    this.socket.emitLocal("resync", { reason });
  }
}

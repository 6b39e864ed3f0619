// A small Socket.IO client: Engine.IO v4 over WebSocket only, namespace "/".
// Packets: "0" open, "2" ping -> "3" pong, "40{auth}" connect, "42[...]" event,
// "44{...}" connect error, "41" disconnect. Reconnects with capped backoff.

export class Socket {
  constructor(authFn) {
    this.authFn = authFn;
    this.handlers = new Map();
    this.ws = null;
    this.stopped = true;
    this.attempt = 0;
    this.timer = null;
    this.pingTimer = null;
    this.state = "offline";
  }

  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
    return () => this.handlers.get(event).delete(fn);
  }

  emitLocal(event, data) {
    (this.handlers.get(event) || []).forEach((fn) => {
      try { fn(data); } catch (exc) { console.error(exc); }
    });
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emitLocal("_state", state);
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.pingTimer);
    if (this.ws) {
      try { this.ws.close(1000); } catch { /* already closed */ }
    }
    this.ws = null;
    this.setState("offline");
  }

  open() {
    if (this.stopped) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/socket.io/?EIO=4&transport=websocket`);
    this.ws = ws;
    this.setState("connecting");
    ws.onmessage = (ev) => this.packet(String(ev.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      clearTimeout(this.pingTimer);
      this.ws = null;
      this.setState("offline");
      this.retry();
    };
    ws.onerror = () => { /* onclose follows and schedules the retry */ };
  }

  retry() {
    if (this.stopped) return;
    // 0.5 s, 1 s, 2 s ... capped at 30 s, with jitter so that many browsers
    // do not all come back at once after an API restart.
    const base = Math.min(30000, 500 * 2 ** this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => this.open(), base / 2 + Math.random() * base / 2);
  }

  watchdog(ms) {
    clearTimeout(this.pingTimer);
    // No ping within interval + timeout means a dead link the OS has not noticed.
    this.pingTimer = setTimeout(() => { if (this.ws) this.ws.close(); }, ms);
  }

  packet(data) {
    const type = data[0];
    if (type === "0") {
      let info = {};
      try { info = JSON.parse(data.slice(1)); } catch { /* defaults */ }
      this.pingWindow = (info.pingInterval || 25000) + (info.pingTimeout || 20000);
      this.watchdog(this.pingWindow);
      this.ws.send(`40${JSON.stringify(this.authFn() || {})}`);
    } else if (type === "2") {
      this.ws.send("3");
      this.watchdog(this.pingWindow || 45000);
    } else if (type === "1") {
      this.ws.close();
    } else if (type === "4") {
      this.message(data.slice(1));
    }
  }

  message(data) {
    const kind = data[0];
    let rest = data.slice(1);
    if (rest.startsWith("/")) {
      // Another namespace: we only joined "/".
      return;
    }
    if (kind === "0") {
      this.attempt = 0;
      this.connects = (this.connects || 0) + 1;
      this.setState("online");
      // After a reconnect, views reload (feed.js turns it into "resync"):
      // events sent while offline are lost.
      this.emitLocal("connect", { reconnect: this.connects > 1 });
    } else if (kind === "4") {
      let err = {};
      try { err = JSON.parse(rest); } catch { /* keep empty */ }
      this.setState("denied");
      this.emitLocal("connect_error", err);
      // Retry later with fresh credentials; a dead session stops us first.
      this.ws.close();
    } else if (kind === "1") {
      this.setState("offline");
    } else if (kind === "2") {
      // An ack id may precede the array; events from the server carry none here.
      rest = rest.replace(/^\d+/, "");
      let arr;
      try { arr = JSON.parse(rest); } catch { return; }
      if (Array.isArray(arr) && typeof arr[0] === "string") {
        // "*" first: the feed watch (feed.js) checks the event's number.
        this.emitLocal("*", { event: arr[0], data: arr[1] });
        this.emitLocal(arr[0], arr[1]);
      }
    }
  }
}

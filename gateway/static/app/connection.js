// One WebSocket to the gateway's /ws, speaking the public client protocol (README,
// *Client protocol*), that reconnects by itself with backoff and says where it stands.
//
// state.phase: 'connecting' | 'open' | 'waiting' (reconnecting after `retryAt`) |
// 'refused' (the gateway refused this browser's token: sign in again).

/** Seconds before the first reconnect attempt; doubled each failure up to MAX_DELAY. */
const FIRST_DELAY = 0.5;
/** Longest wait between attempts, in seconds: a gateway back after an outage is found
 * within this long. */
const MAX_DELAY = 15;
/** Milliseconds a request may wait for its answer: the gateway's own longest timeout is
 * 125 s (startWorldURL); past this a request is failed on the page. */
const REQUEST_TIMEOUT = 130_000;
/** Close codes after which reconnecting with the same cookie cannot help. */
const REFUSED = new Set([4401, 4403]);

export class Connection {
  constructor({ url, onEvent, onState, onOpen, onRefusal }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onOpen = onOpen;
    this.onRefusal = onRefusal; // async () => boolean: true when the token is refused
    this.state = { phase: 'connecting', attempt: 0, retryAt: null, reason: '' };
    this.pending = new Map();
    this.ids = 0;
    this.ws = null;
    this.stopped = false;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, 'signed out');
    this.failAll('The dashboard was closed.');
  }

  setState(change) {
    this.state = { ...this.state, ...change };
    this.onState(this.state);
  }

  connect() {
    clearTimeout(this.timer);
    this.setState({ phase: 'connecting', retryAt: null });
    let opened = false;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.setState({ phase: 'open', attempt: 0, reason: '' });
      this.onOpen();
    };
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      const waiter = message.id != null ? this.pending.get(message.id) : undefined;
      if (waiter?.each && !endsBulk(message)) {
        clearTimeout(waiter.timer); // a bulk request lives as long as its servers answer
        waiter.timer = waiter.arm();
        waiter.each(message);
      } else if (waiter) {
        this.pending.delete(message.id);
        clearTimeout(waiter.timer);
        waiter.resolve(message);
      } else {
        this.onEvent(message);
      }
    };
    ws.onclose = async (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failAll('The connection to the gateway was lost; the request may or may not have run.');
      if (this.stopped) return;
      if (REFUSED.has(event.code) || (!opened && await this.onRefusal())) {
        this.setState({ phase: 'refused', reason: event.reason || 'the gateway refused the token' });
        return;
      }
      const attempt = this.state.attempt + 1;
      const delay = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** (attempt - 1)) * (0.8 + 0.4 * Math.random());
      this.setState({
        phase: 'waiting', attempt, retryAt: Date.now() + delay * 1000,
        reason: event.reason || (opened ? 'connection lost' : 'gateway unreachable'),
      });
      this.timer = setTimeout(() => this.connect(), delay * 1000);
    };
  }

  /** Reconnect now instead of waiting out the backoff. */
  retry() {
    if (this.state.phase === 'waiting') this.connect();
  }

  failAll(text) {
    for (const [id, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      waiter.resolve({ type: 'error', code: 'disconnected', message: text, id });
    }
    this.pending.clear();
  }

  /** Send `message` with a fresh id; resolves with the reply carrying that id (an `error`
   * reply included: check `reply.type`). Never rejects. */
  request(message) {
    return this.send(message, null);
  }

  /** Send a bulk request (`servers` instead of `server`, README *Bulk commands*): `each`
   * is called with every server's own reply (`command_response`, `container_response`,
   * `bans_update` or `error`, each with its `server`); resolves with the `bulk_done`, or
   * with the `error` that refused the whole request (it names no server). Never rejects. */
  bulk(message, each) {
    return this.send(message, each);
  }

  send(message, each) {
    const id = ++this.ids;
    return new Promise((resolve) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        resolve({ type: 'error', code: 'disconnected', message: 'Not connected to the gateway; try again once it is back.', id });
        return;
      }
      const arm = () => setTimeout(() => {
        this.pending.delete(id);
        resolve({ type: 'error', code: 'timeout', message: 'No answer from the gateway in time.', id });
      }, REQUEST_TIMEOUT);
      this.pending.set(id, { resolve, timer: arm(), arm, each });
      this.ws.send(JSON.stringify({ ...message, id }));
    });
  }
}

/** Whether `message` is the last one a bulk request gets: its `bulk_done`, or an error
 * about the request as a whole (no `server`: nothing matched, bad request, rate limit). */
function endsBulk(message) {
  return message.type === 'bulk_done' || (message.type === 'error' && message.server == null);
}

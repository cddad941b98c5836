// Live tail over Loki's websocket protocol, batched per animation frame, with a lines-per-second rate.
import { compareNs } from "./format.js";
import { tailUrl } from "./api.js";

/**
 * A live tail session. `onEntries(entries)` gets batches of {ts, line, labels} (oldest first) at most once
 * per animation frame; `onRate(linesPerSecond)` once a second; `onEnd(message, opened)` when the
 * connection ends (`opened` false: the server refused the handshake).
 */
export class TailSession {
  constructor({ query, limit, startNs, cap, onEntries, onRate, onEnd, onDropped }) {
    Object.assign(this, { onEntries, onRate, onEnd, onDropped, cap });
    this.queue = [];
    this.paused = false;
    this.frame = 0;
    this.received = 0;
    this.lastTick = performance.now();
    this.closed = false;
    this.ws = new WebSocket(tailUrl({ query, limit, start: startNs }));
    this.opened = false;
    this.ws.onopen = () => (this.opened = true);
    this.ws.onmessage = (ev) => this.receive(ev.data);
    this.ws.onclose = (ev) => this.finish(ev);
    this.timer = setInterval(() => this.tick(), 1000);
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    const batch = [];
    for (const s of msg.streams || []) for (const [ts, line] of s.values || []) batch.push({ ts, line, labels: s.stream || {} });
    batch.sort((a, b) => compareNs(a.ts, b.ts));
    this.received += batch.length;
    for (const e of batch) this.queue.push(e);
    // While paused the queue keeps only the newest lines the view could show anyway.
    if (this.queue.length > this.cap) this.queue.splice(0, this.queue.length - this.cap);
    if (msg.dropped_entries && msg.dropped_entries.length && this.onDropped) this.onDropped(msg.dropped_entries.length);
    this.schedule();
  }

  schedule() {
    if (this.paused || this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      if (this.paused || !this.queue.length) return;
      const batch = this.queue;
      this.queue = [];
      this.onEntries(batch);
    });
  }

  tick() {
    const now = performance.now();
    this.onRate((this.received * 1000) / Math.max(1, now - this.lastTick));
    this.received = 0;
    this.lastTick = now;
  }

  pause() {
    this.paused = true;
  }

  resume() {
    this.paused = false;
    this.schedule();
  }

  finish(ev) {
    clearInterval(this.timer);
    if (this.closed) return;
    this.closed = true;
    const reason = ev.reason || (ev.code === 1000 ? "" : `Live tail connection closed (code ${ev.code})`);
    this.onEnd(reason, this.opened);
  }

  /** Stop the tail (no onEnd call). */
  close() {
    this.closed = true;
    clearInterval(this.timer);
    if (this.frame) cancelAnimationFrame(this.frame);
    this.ws.close(1000);
  }
}

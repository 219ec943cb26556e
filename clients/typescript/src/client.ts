/**
 * A client of Streamer's WebSocket API for browsers and Node: requests, progress,
 * cancel, server push, and resume after drops.
 *
 * One socket carries any number of requests at once: each frame gets a client id
 * and every server message is handed to the request it belongs to. When the socket
 * drops, the client reconnects with exponential backoff and full jitter, then asks
 * for every acknowledged async request again with `subscribe`, so a completion that
 * happened while it was away is not lost. It mirrors `streamer.client.StreamerClient`.
 */

import { RequestTimeout, StreamerConnectionError, StreamerError, isErrorCode } from "./errors.js";
import {
  type Acknowledgment,
  type JsonObject,
  type Notification,
  type ProgressUpdate,
  type ServerMessage,
  decodeServerMessage,
} from "./protocol.js";

/** API Gateway's WebSocket message limit, in bytes. */
export const MAX_MESSAGE_BYTES = 128 * 1024;
/**
 * API Gateway's frame limit, in bytes. The platform `WebSocket` (and `ws`) send every
 * message as one frame and cannot fragment it, so this is the largest request a
 * browser can send: a bigger frame would be closed with 1009.
 */
export const MAX_FRAME_BYTES = 32 * 1024;
/** Half of API Gateway's 10-minute idle timeout. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 5 * 60 * 1000;

/** A JWT, or a function returning a fresh one (called on every (re)connect). */
export type TokenSource = string | (() => string | Promise<string>);

/** Where the client's socket is in its life. */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** What one action takes and gives. */
export interface ActionTypes {
  payload: unknown;
  result: unknown;
}

/** A map of action names to their types, as `streamer codegen typescript` writes it. */
export type ActionMapOf<A> = { [K in keyof A]: ActionTypes };

/** Any action, any JSON payload, an unknown result: the client without generated types. */
export type UntypedActions = { [action: string]: { payload: JsonObject; result: unknown } };

/** The payload type of action `K` in map `A`. */
export type PayloadOf<A, K extends keyof A> = A[K] extends { payload: infer P } ? P : never;
/** The result type of action `K` in map `A`. */
export type ResultOf<A, K extends keyof A> = A[K] extends { result: infer R } ? R : never;

/** The part of the platform `WebSocket` (or the `ws` package's) this client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (event: never) => void): void;
}

/** A `WebSocket` constructor: the platform's, `ws`'s, or a test's. */
export type WebSocketFactory = new (url: string) => WebSocketLike;

/** Called with each progress update of a request, percentages never decreasing. */
export type ProgressCallback = (update: ProgressUpdate) => void | Promise<void>;

/** Options of `new StreamerClient(url, options)`. Durations are in milliseconds. */
export interface StreamerClientOptions {
  /** A JWT, or a (sync or async) function returning one, called on every connect. */
  token?: TokenSource | undefined;
  /** Between `ping` actions that keep API Gateway's idle timer from closing the socket; null turns it off. Default 300 000. */
  heartbeatIntervalMs?: number | null | undefined;
  /** A `ping` unanswered this long drops the socket, which triggers a reconnect. Default 30 000. */
  heartbeatTimeoutMs?: number | undefined;
  /** Reconnect after a drop. Default true. */
  reconnect?: boolean | undefined;
  /** Attempts per drop before giving up. Default 10. */
  maxReconnectAttempts?: number | undefined;
  /** The first backoff ceiling; it doubles per attempt. Default 500. */
  backoffInitialMs?: number | undefined;
  /** The largest backoff ceiling. Default 30 000. */
  backoffMaxMs?: number | undefined;
  /**
   * After a drop, send again a request the server had not answered yet, with the same
   * id (idempotent for async actions; a sync action may run twice). Default true.
   */
  resendUnanswered?: boolean | undefined;
  /** How long one handshake may take. Default 10 000. */
  openTimeoutMs?: number | undefined;
  /** The `WebSocket` constructor; default the platform's, else the `ws` package's. */
  WebSocket?: WebSocketFactory | undefined;
  /** Called with every server message, before it is dispatched. */
  onMessage?: ((message: ServerMessage) => void) | undefined;
  /** Called with every text frame sent ("out") and received ("in"): for logs and consoles. */
  onFrame?: ((direction: "in" | "out", text: string) => void) | undefined;
  /** Called when the socket's state changes. */
  onStateChange?: ((state: ConnectionState) => void) | undefined;
}

/** Options of one `request`. */
export interface RequestOptions {
  /** Called with each progress update; a callback that throws fails the request. */
  onProgress?: ProgressCallback | undefined;
  /** Called when the server acknowledges an async request (it is stored and queued). */
  onAcknowledged?: ((ack: Acknowledgment) => void) | undefined;
  /** Aborting it sends `cancel` and rejects with a `StreamerError` `CANCELLED`. */
  signal?: AbortSignal | undefined;
  /** Milliseconds to wait for the final answer; rejects with `RequestTimeout`. Default: no limit. */
  timeout?: number | undefined;
  /** The client id (at most 128 printable characters); repeating one is idempotent. Default: random. */
  requestId?: string | undefined;
  /** The frame's `metadata` object. */
  metadata?: JsonObject | undefined;
}

/** Options of `subscribe`: a request made earlier, maybe by another connection. */
export type SubscribeOptions = Pick<RequestOptions, "onProgress" | "signal" | "timeout">;

const TERMINAL_STATUSES = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

/** The stored state of an async request, as `status` and `subscribe` answer it. */
export class RequestSnapshot {
  constructor(
    /** The request's id. */
    readonly requestId: string,
    /** PENDING, PROCESSING, COMPLETED, FAILED or CANCELLED. */
    readonly status: string,
    /** The last percentage saved (0 to 100). */
    readonly progress: number,
    /** The last progress message. */
    readonly message: string,
    /** The result once COMPLETED. */
    readonly result: unknown,
    /** `{code, message, details}` once FAILED or CANCELLED. */
    readonly error: JsonObject | undefined,
    /** The whole `data` object of the response. */
    readonly raw: JsonObject,
  ) {}

  /** True once nothing more will happen to the request. */
  get isTerminal(): boolean {
    return TERMINAL_STATUSES.has(this.status);
  }

  /** Read a snapshot from a `response`'s `data`, tolerating absent fields. */
  static fromData(data: unknown, requestId = ""): RequestSnapshot {
    if (!isObject(data)) throw new StreamerError("INTERNAL_ERROR", "the server sent a malformed snapshot");
    const body = isObject(data.request) ? data.request : data;
    const progress = body.progress ?? body.percentage;
    return new RequestSnapshot(
      typeof body.request_id === "string" && body.request_id ? body.request_id : requestId,
      String(body.status ?? "").toUpperCase(),
      typeof progress === "number" ? progress : 0,
      typeof body.message === "string" ? body.message : "",
      body.result,
      isObject(body.error) ? body.error : undefined,
      data,
    );
  }

  /** The `StreamerError` a FAILED or CANCELLED request ended with. */
  toError(): StreamerError {
    const error = this.error ?? {};
    const fallback = this.status === "CANCELLED" ? "CANCELLED" : "PROCESSING_FAILED";
    const code = isErrorCode(error.code) ? error.code : fallback;
    const message = typeof error.message === "string" ? error.message : `request ${this.status.toLowerCase()}`;
    return new StreamerError(code, message, error.details ?? undefined);
  }
}

interface Link {
  readonly socket: WebSocketLike;
  readonly generation: number;
  open: boolean;
}

/** What the dispatcher tells one exchange (a request, a subscribe, a built-in call). */
interface Exchange {
  message(message: ServerMessage): void;
  reconnected(generation: number): void;
  lost(error: StreamerError): void;
}

let loadedWs: Promise<WebSocketFactory> | undefined;

/**
 * A client of one Streamer WebSocket API, connecting on first use and reconnecting as needed.
 *
 * `A` maps action names to their payload and result types (generate it with
 * `streamer codegen typescript`); without it any action takes any JSON object.
 *
 * @example
 * const client = new StreamerClient("ws://localhost:3001", { token });
 * const report = await client.request("generate_report", { start_date: "2026-01-01", end_date: "2026-03-31" }, {
 *   onProgress: (update) => console.log(`${update.percentage}% ${update.message}`),
 * });
 * await client.close();
 */
export class StreamerClient<A extends ActionMapOf<A> = UntypedActions> {
  /** The WebSocket API, e.g. `ws://localhost:3001` or `wss://…/prod`. */
  readonly url: string;
  private readonly options: StreamerClientOptions;
  private currentState: ConnectionState = "idle";
  private link: Link | undefined;
  private opening: Promise<void> | undefined;
  private failure: StreamerError | undefined;
  private waiters: Array<() => void> = [];
  private readonly routes = new Map<string, Exchange>();
  private readonly listeners = new Set<(notification: Notification) => void>();
  private readonly pendingCancels = new Set<string>();
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private wakeBackoff: (() => void) | undefined;
  private reconnectCount = 0;
  private currentConnectionId: string | undefined;

  constructor(url: string, options: StreamerClientOptions = {}) {
    this.url = url;
    this.options = options;
  }

  /** The socket's state. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** This socket's connection id as the last `ping` reported it. */
  get connectionId(): string | undefined {
    return this.currentConnectionId;
  }

  /** How many times the client has reconnected after a drop. */
  get reconnects(): number {
    return this.reconnectCount;
  }

  // -- lifecycle -----------------------------------------------------------------------

  /**
   * Open the socket (one attempt); `request` and the others call it on first use.
   * Rejects with `StreamerConnectionError` when the server is unreachable or refuses
   * the token (`code` UNAUTHORIZED, `statusCode` 401/403 on Node) or the user has too
   * many connections (RATE_LIMITED, 429); the client is then closed.
   */
  connect(): Promise<void> {
    if (this.opening === undefined) {
      if (this.failure !== undefined) return Promise.reject(this.failure);
      this.setState("connecting");
      this.opening = this.openLink(0).then(
        (link) => {
          if (this.currentState === "closed") {
            closeQuietly(link.socket);
            throw this.failure ?? new StreamerConnectionError("the client is closed");
          }
          this.use(link);
        },
        (error: unknown) => {
          const failure = asConnectionError(error);
          this.setState("closed");
          this.fail(failure);
          throw failure;
        },
      );
    }
    return this.opening;
  }

  /** Close the socket; requests still waiting reject with `StreamerConnectionError`. */
  async close(): Promise<void> {
    if (this.currentState === "closed") return;
    this.setState("closed");
    this.stopHeartbeat();
    this.wakeBackoff?.();
    const link = this.link;
    this.fail(new StreamerConnectionError("the client is closed"));
    if (link?.open) {
      link.open = false;
      await closeAndWait(link.socket);
    }
  }

  /**
   * Call `listener` with every `notification` the server pushes to this connection.
   * Returns a function that removes it.
   */
  onNotification(listener: (notification: Notification) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  // -- the API -------------------------------------------------------------------------

  /**
   * Run an action and resolve with its answer: a sync action's `data` or an async one's `result`.
   *
   * Rejects with the server's `StreamerError` (its code, message and details),
   * `RequestTimeout` when `timeout` runs out (the request may still run), a
   * `CANCELLED` `StreamerError` when `signal` aborts (after the server confirmed the
   * cancel of an acknowledged request), or `StreamerConnectionError` when the socket
   * is lost for good.
   */
  request<K extends keyof A & string>(
    action: K,
    payload: PayloadOf<A, K>,
    options: RequestOptions = {},
  ): Promise<ResultOf<A, K>> {
    const requestId = options.requestId ?? newId();
    let frame: string;
    try {
      frame = encodeFrame(requestId, action, payload, options.metadata);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.run(requestId, frame, requestId, false, options) as Promise<ResultOf<A, K>>;
  }

  /**
   * Follow an async request made earlier (maybe by another connection) and resolve
   * with its result, reporting its progress on the way. Rejects with NOT_FOUND for an
   * unknown id (or another user's), or with the request's own error.
   */
  subscribe(requestId: string, options: SubscribeOptions = {}): Promise<unknown> {
    const subscribeId = newId();
    const frame = encodeFrame(subscribeId, "subscribe", { request_id: requestId }, undefined);
    return this.run(requestId, frame, subscribeId, true, options);
  }

  /** The stored state of an async request; rejects with NOT_FOUND for an unknown id. */
  async status(requestId: string, options: { timeout?: number } = {}): Promise<RequestSnapshot> {
    const data = await this.call("status", { request_id: requestId }, options.timeout ?? 30_000);
    return RequestSnapshot.fromData(data, requestId);
  }

  /** Cancel an async request; the running action stops at its next progress report. */
  async cancel(requestId: string, options: { timeout?: number } = {}): Promise<RequestSnapshot> {
    const data = await this.call("cancel", { request_id: requestId }, options.timeout ?? 30_000);
    return RequestSnapshot.fromData(data, requestId);
  }

  /** Send the `ping` action; resolves with this socket's connection id. */
  async ping(options: { timeout?: number } = {}): Promise<string> {
    const data = await this.call("ping", {}, options.timeout ?? 30_000);
    const connectionId = isObject(data) && typeof data.connection_id === "string" ? data.connection_id : "";
    this.currentConnectionId = connectionId || undefined;
    return connectionId;
  }

  // -- exchanges -----------------------------------------------------------------------

  private run(
    requestId: string,
    frame: string,
    frameId: string,
    followingAlready: boolean,
    options: RequestOptions,
  ): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      const usable = this.usableFor(requestId);
      if (usable !== undefined) {
        reject(usable);
        return;
      }
      const signal = options.signal;
      if (signal?.aborted) {
        reject(aborted(requestId));
        return;
      }
      let acknowledged = followingAlready;
      let sending = false;
      let sentOn = -1;
      let firstSentOn = -1;
      let lastPercentage = -1;
      let settled = false;
      let callbacks: Promise<void> = Promise.resolve();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const keys = [requestId];

      const cleanup = (): void => {
        for (const key of keys) if (this.routes.get(key) === exchange) this.routes.delete(key);
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      // Progress callbacks run in order; the outcome waits for the last one.
      const settle = (outcome: () => void): void => {
        if (settled) return;
        settled = true;
        cleanup();
        callbacks.then(outcome, reject);
      };
      const report = (update: ProgressUpdate): void => {
        const callback = options.onProgress;
        if (callback === undefined || update.percentage < lastPercentage) return;
        lastPercentage = update.percentage;
        callbacks = callbacks.then(() => callback(update));
        callbacks.catch((error: unknown) => settle(() => reject(error)));
      };
      const sendNow = (text: string): void => {
        sending = true;
        this.send(text, () => !settled).then(
          (generation) => {
            sending = false;
            sentOn = generation;
            if (firstSentOn < 0) firstSentOn = generation;
          },
          (error: unknown) => {
            sending = false;
            settle(() => reject(error));
          },
        );
      };
      const resubscribe = (): void => {
        // A fresh frame id, routed here too: the snapshot comes back as a `response`
        // to that id.
        const subscribeId = newId();
        keys.push(subscribeId);
        this.routes.set(subscribeId, exchange);
        sendNow(encodeFrame(subscribeId, "subscribe", { request_id: requestId }, undefined));
      };
      const onAbort = (): void => {
        if (settled) return;
        if (!acknowledged) {
          // Not stored yet as far as we know: cancel it if an acknowledgment comes.
          if (sentOn >= 0) this.pendingCancels.add(requestId);
          settle(() => reject(aborted(requestId)));
          return;
        }
        const confirmed = this.cancel(requestId).then(
          (snapshot) => snapshot.raw,
          () => undefined,
        );
        settle(() => {
          void confirmed.then((answer) => reject(aborted(requestId, answer)));
        });
      };

      const exchange: Exchange = {
        message: (message) => {
          switch (message.type) {
            case "response": {
              if (!acknowledged) {
                settle(() => resolve(message.data));
                return;
              }
              let snapshot: RequestSnapshot;
              try {
                snapshot = RequestSnapshot.fromData(message.data, requestId);
              } catch (error) {
                settle(() => reject(error));
                return;
              }
              if (snapshot.status === "COMPLETED") settle(() => resolve(snapshot.result));
              else if (snapshot.isTerminal) settle(() => reject(snapshot.toError()));
              else if (snapshot.progress > lastPercentage && snapshot.progress > 0) report(progressOf(requestId, snapshot));
              return;
            }
            case "acknowledgment":
              acknowledged = true;
              options.onAcknowledged?.(message);
              // A repeated id answers with the stored status; whatever happened before
              // is learned (and followed) by subscribing.
              if (sentOn !== firstSentOn || message.status.toLowerCase() !== "queued") resubscribe();
              return;
            case "progress":
              report(message);
              return;
            case "complete":
              settle(() => resolve(message.result));
              return;
            case "error":
              settle(() => reject(new StreamerError(message.error.code, message.error.message, message.error.details)));
              return;
            default:
              return;
          }
        },
        reconnected: (generation) => {
          if (settled || sending || generation <= sentOn) return;
          if (acknowledged) resubscribe();
          else if (this.options.resendUnanswered ?? true) sendNow(frame);
          else
            settle(() =>
              reject(
                new StreamerConnectionError(
                  `the connection dropped before request "${requestId}" was answered; it may or may not have run`,
                ),
              ),
            );
        },
        lost: (error) => settle(() => reject(error)),
      };

      this.routes.set(requestId, exchange);
      if (frameId !== requestId) {
        keys.push(frameId);
        this.routes.set(frameId, exchange);
      }
      if (options.timeout !== undefined) {
        const timeoutMs = options.timeout;
        timer = setTimeout(() => settle(() => reject(new RequestTimeout(requestId, timeoutMs))), timeoutMs);
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      sendNow(frame);
    });
  }

  /** A built-in action answered by one `response`; sent again after a reconnect. */
  private call(action: string, payload: JsonObject, timeoutMs: number): Promise<unknown> {
    const callId = newId();
    const frame = encodeFrame(callId, action, payload, undefined);
    return new Promise<unknown>((resolve, reject) => {
      const usable = this.usableFor(callId);
      if (usable !== undefined) {
        reject(usable);
        return;
      }
      let sending = false;
      let sentOn = -1;
      let settled = false;
      const settle = (outcome: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.routes.delete(callId);
        outcome();
      };
      const sendNow = (): void => {
        sending = true;
        this.send(frame, () => !settled).then(
          (generation) => {
            sending = false;
            sentOn = generation;
          },
          (error: unknown) => {
            sending = false;
            settle(() => reject(error));
          },
        );
      };
      const timer = setTimeout(() => settle(() => reject(new RequestTimeout(callId, timeoutMs))), timeoutMs);
      this.routes.set(callId, {
        message: (message) => {
          if (message.type === "response") settle(() => resolve(message.data));
          else if (message.type === "error")
            settle(() => reject(new StreamerError(message.error.code, message.error.message, message.error.details)));
        },
        reconnected: (generation) => {
          if (!settled && !sending && generation > sentOn) sendNow();
        },
        lost: (error) => settle(() => reject(error)),
      });
      sendNow();
    });
  }

  private usableFor(id: string): Error | undefined {
    if (this.failure !== undefined) return this.failure;
    if (this.routes.has(id)) return new Error(`request "${id}" is already in flight on this client`);
    return undefined;
  }

  // -- the socket ----------------------------------------------------------------------

  /** Send on the live socket, waiting for one if needed; resolves with its generation. */
  private async send(text: string, isStillWanted: () => boolean): Promise<number> {
    const link = await this.liveLink();
    if (!isStillWanted()) return -1;
    link.socket.send(text);
    this.options.onFrame?.("out", text);
    return link.generation;
  }

  private async liveLink(): Promise<Link> {
    for (;;) {
      if (this.failure !== undefined) throw this.failure;
      if (this.currentState === "idle" || this.currentState === "connecting") await this.connect();
      const link = this.link;
      if (link?.open) return link;
      await new Promise<void>((wake) => this.waiters.push(wake));
    }
  }

  private setState(state: ConnectionState): void {
    if (this.currentState === state) return;
    this.currentState = state;
    this.options.onStateChange?.(state);
  }

  private wakeWaiters(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  private use(link: Link): void {
    this.link = link;
    this.setState("open");
    this.startHeartbeat(link);
    this.wakeWaiters();
  }

  private fail(error: StreamerError): void {
    this.failure = error;
    this.wakeWaiters();
    for (const exchange of new Set(this.routes.values())) exchange.lost(error);
  }

  private async openLink(generation: number): Promise<Link> {
    const token = await this.tokenValue();
    const Impl = await this.webSocketImpl();
    const url = withToken(this.url, token);
    const openTimeoutMs = this.options.openTimeoutMs ?? 10_000;
    return new Promise<Link>((resolve, reject) => {
      let socket: WebSocketLike;
      try {
        socket = new Impl(url);
      } catch (error) {
        reject(new StreamerConnectionError(`cannot connect to ${safeUrl(this.url)}: ${describe(error)}`));
        return;
      }
      const link: Link = { socket, generation, open: false };
      let settled = false;
      let statusCode: number | undefined;
      let reason = "";
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        closeQuietly(socket);
        reject(new StreamerConnectionError(`cannot connect to ${safeUrl(this.url)}: no handshake within ${openTimeoutMs} ms`));
      }, openTimeoutMs);
      socket.addEventListener("open", () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        link.open = true;
        resolve(link);
      });
      socket.addEventListener("error", (event: { message?: unknown; error?: unknown }) => {
        // Node's `ws` says "Unexpected server response: 401"; a browser says nothing.
        reason = typeof event.message === "string" ? event.message : describe(event.error);
        const match = /Unexpected server response: (\d{3})/.exec(reason);
        if (match?.[1] !== undefined) statusCode = Number(match[1]);
      });
      socket.addEventListener("message", (event: { data?: unknown }) => {
        if (link.open) this.dispatch(event.data);
      });
      socket.addEventListener("close", (event: { code?: number }) => {
        clearTimeout(timer);
        if (!settled) {
          settled = true;
          reject(refusal(this.url, statusCode, reason));
          return;
        }
        if (link.open) {
          link.open = false;
          this.dropped(link, event.code);
        }
      });
    });
  }

  private async tokenValue(): Promise<string | undefined> {
    const token = this.options.token;
    if (token === undefined || typeof token === "string") return token;
    try {
      return await token();
    } catch (error) {
      // The type only: the error's text might quote a credential.
      const name = error instanceof Error ? error.name : typeof error;
      throw new StreamerConnectionError(`the token function threw ${name}`);
    }
  }

  private async webSocketImpl(): Promise<WebSocketFactory> {
    if (this.options.WebSocket !== undefined) return this.options.WebSocket;
    const platform = (globalThis as { WebSocket?: WebSocketFactory }).WebSocket;
    if (platform !== undefined) return platform;
    loadedWs ??= loadWs();
    return loadedWs;
  }

  private dropped(link: Link, closeCode: number | undefined): void {
    this.stopHeartbeat();
    if (this.link !== link || this.currentState === "closed") return;
    if (!(this.options.reconnect ?? true)) {
      this.setState("closed");
      this.fail(new StreamerConnectionError(`the connection was closed by the server (code ${closeCode ?? "?"})`));
      return;
    }
    this.setState("reconnecting");
    void this.reopen(link.generation + 1);
  }

  /** Reconnect with exponential backoff and full jitter, then resume every exchange. */
  private async reopen(generation: number): Promise<void> {
    const attempts = this.options.maxReconnectAttempts ?? 10;
    const initialMs = this.options.backoffInitialMs ?? 500;
    const maxMs = this.options.backoffMaxMs ?? 30_000;
    let last: StreamerConnectionError | undefined;
    for (let attempt = 0; attempt < attempts; attempt += 1) {
      await this.pause(Math.random() * Math.min(maxMs, initialMs * 2 ** attempt));
      if (this.isClosed()) return;
      let link: Link;
      try {
        link = await this.openLink(generation);
      } catch (error) {
        last = asConnectionError(error);
        if (last.statusCode === 401 || last.statusCode === 403) break;
        continue;
      }
      if (this.isClosed()) {
        closeQuietly(link.socket);
        return;
      }
      this.reconnectCount += 1;
      this.use(link);
      for (const requestId of this.pendingCancels) void this.cancel(requestId).catch(() => undefined);
      this.pendingCancels.clear();
      for (const exchange of new Set(this.routes.values())) exchange.reconnected(generation);
      return;
    }
    if (this.isClosed()) return;
    this.setState("closed");
    const reason = last?.message ?? "no attempts allowed";
    const gaveUp =
      last?.statusCode !== undefined && last.statusCode !== 429
        ? last
        : new StreamerConnectionError(`gave up after ${attempts} reconnect attempts: ${reason}`);
    this.fail(gaveUp);
  }

  /** A method, not a field read: the state changes across awaits. */
  private isClosed(): boolean {
    return this.currentState === "closed";
  }

  private pause(ms: number): Promise<void> {
    return new Promise<void>((wake) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        wake();
      }
      this.wakeBackoff = done;
    });
  }

  private startHeartbeat(link: Link): void {
    this.stopHeartbeat();
    const intervalMs = this.options.heartbeatIntervalMs === undefined ? DEFAULT_HEARTBEAT_INTERVAL_MS : this.options.heartbeatIntervalMs;
    if (intervalMs === null) return;
    const timeoutMs = this.options.heartbeatTimeoutMs ?? 30_000;
    this.heartbeat = setInterval(() => {
      this.ping({ timeout: timeoutMs }).catch(() => {
        // A socket that does not answer is dead even if it looks open: drop it now.
        if (!link.open) return;
        link.open = false;
        closeQuietly(link.socket);
        this.dropped(link, undefined);
      });
    }, intervalMs);
  }

  private stopHeartbeat(): void {
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  private dispatch(data: unknown): void {
    if (typeof data !== "string") return;
    this.options.onFrame?.("in", data);
    const message = decodeServerMessage(data);
    if (message === undefined) return;
    try {
      this.options.onMessage?.(message);
    } catch (error) {
      console.error("streamer client: onMessage threw; the message is still delivered", error);
    }
    if (message.type === "notification") {
      for (const listener of this.listeners) {
        try {
          listener(message);
        } catch (error) {
          console.error("streamer client: a notification listener threw", error);
        }
      }
      return;
    }
    const requestId = message.request_id;
    if (requestId === undefined) return;
    if (this.pendingCancels.delete(requestId) && message.type === "acknowledgment") {
      void this.cancel(requestId).catch(() => undefined);
    }
    this.routes.get(requestId)?.message(message);
  }
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function newId(): string {
  const crypto = globalThis.crypto;
  if (typeof crypto?.randomUUID === "function") return crypto.randomUUID().replaceAll("-", "");
  // randomUUID needs a secure context; getRandomValues does not.
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** The JSON text frame; refuses locally what API Gateway would close the socket for (over 32 KB). */
function encodeFrame(id: string, action: string, payload: unknown, metadata: JsonObject | undefined): string {
  const message: JsonObject = { id, action, payload: payload ?? {} };
  if (metadata !== undefined && Object.keys(metadata).length > 0) message.metadata = metadata;
  const frame = JSON.stringify(message);
  const size = new TextEncoder().encode(frame).length;
  if (size > MAX_FRAME_BYTES) {
    throw new StreamerError(
      "PAYLOAD_TOO_LARGE",
      `message is ${size} bytes; one frame (all a WebSocket client sends) is at most ${MAX_FRAME_BYTES}`,
      { size, limit: MAX_FRAME_BYTES },
    );
  }
  return frame;
}

function aborted(requestId: string, answer?: JsonObject): StreamerError {
  return new StreamerError("CANCELLED", "the request was aborted", {
    request_id: requestId,
    ...(answer !== undefined ? { cancelled: answer.cancelled, status: answer.status } : {}),
  });
}

function progressOf(requestId: string, snapshot: RequestSnapshot): ProgressUpdate {
  const details = snapshot.raw.details;
  return {
    type: "progress",
    timestamp: new Date().toISOString(),
    request_id: requestId,
    percentage: snapshot.progress,
    message: snapshot.message,
    metadata: isObject(details) ? details : {},
  };
}

/** The URL carrying the token as `?Authorization=` (what browsers can send). */
function withToken(url: string, token: string | undefined): string {
  if (token === undefined) return url;
  const target = new URL(url);
  target.searchParams.set("Authorization", token);
  return target.toString();
}

/** The URL without its query, so a token in it never reaches a message or a log. */
function safeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.search = "";
    parsed.hash = "";
    return parsed.toString();
  } catch {
    return "the WebSocket URL";
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return typeof error === "string" ? error : "unknown error";
}

function refusal(url: string, statusCode: number | undefined, reason: string): StreamerConnectionError {
  if (statusCode !== undefined) {
    return new StreamerConnectionError(`${safeUrl(url)} refused the connection: HTTP ${statusCode}`, statusCode);
  }
  const why = reason || "the server refused the handshake or could not be reached";
  return new StreamerConnectionError(`cannot connect to ${safeUrl(url)}: ${why}`);
}

function asConnectionError(error: unknown): StreamerConnectionError {
  if (error instanceof StreamerConnectionError) return error;
  return new StreamerConnectionError(`the connection failed: ${describe(error)}`);
}

function closeQuietly(socket: WebSocketLike): void {
  try {
    const terminate = (socket as { terminate?: () => void }).terminate;
    if (typeof terminate === "function") terminate.call(socket);
    else socket.close(1000);
  } catch {
    // Already closed.
  }
}

function closeAndWait(socket: WebSocketLike): Promise<void> {
  return new Promise<void>((done) => {
    const timer = setTimeout(() => {
      closeQuietly(socket);
      done();
    }, 2000);
    socket.addEventListener("close", () => {
      clearTimeout(timer);
      done();
    });
    try {
      socket.close(1000, "client closed");
    } catch {
      clearTimeout(timer);
      done();
    }
  });
}

async function loadWs(): Promise<WebSocketFactory> {
  // A computed specifier: browsers and bundlers never try to resolve `ws`.
  const specifier = "ws";
  try {
    const module = (await import(/* @vite-ignore */ /* webpackIgnore: true */ specifier)) as {
      WebSocket?: WebSocketFactory;
      default?: WebSocketFactory;
    };
    const Impl = module.WebSocket ?? module.default;
    if (Impl !== undefined) return Impl;
  } catch {
    // Reported below.
  }
  loadedWs = undefined;
  throw new StreamerConnectionError(
    "this runtime has no WebSocket: on Node 20, install the `ws` package (npm install ws)",
  );
}

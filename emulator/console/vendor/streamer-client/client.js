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
import { decodeServerMessage, } from "./protocol.js";
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
const TERMINAL_STATUSES = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
/** The stored state of an async request, as `status` and `subscribe` answer it. */
export class RequestSnapshot {
    requestId;
    status;
    progress;
    message;
    result;
    error;
    raw;
    constructor(
    /** The request's id. */
    requestId, 
    /** PENDING, PROCESSING, COMPLETED, FAILED or CANCELLED. */
    status, 
    /** The last percentage saved (0 to 100). */
    progress, 
    /** The last progress message. */
    message, 
    /** The result once COMPLETED. */
    result, 
    /** `{code, message, details}` once FAILED or CANCELLED. */
    error, 
    /** The whole `data` object of the response. */
    raw) {
        this.requestId = requestId;
        this.status = status;
        this.progress = progress;
        this.message = message;
        this.result = result;
        this.error = error;
        this.raw = raw;
    }
    /** True once nothing more will happen to the request. */
    get isTerminal() {
        return TERMINAL_STATUSES.has(this.status);
    }
    /** Read a snapshot from a `response`'s `data`, tolerating absent fields. */
    static fromData(data, requestId = "") {
        if (!isObject(data))
            throw new StreamerError("INTERNAL_ERROR", "the server sent a malformed snapshot");
        const body = isObject(data.request) ? data.request : data;
        const progress = body.progress ?? body.percentage;
        return new RequestSnapshot(typeof body.request_id === "string" && body.request_id ? body.request_id : requestId, String(body.status ?? "").toUpperCase(), typeof progress === "number" ? progress : 0, typeof body.message === "string" ? body.message : "", body.result, isObject(body.error) ? body.error : undefined, data);
    }
    /** The `StreamerError` a FAILED or CANCELLED request ended with. */
    toError() {
        const error = this.error ?? {};
        const fallback = this.status === "CANCELLED" ? "CANCELLED" : "PROCESSING_FAILED";
        const code = isErrorCode(error.code) ? error.code : fallback;
        const message = typeof error.message === "string" ? error.message : `request ${this.status.toLowerCase()}`;
        return new StreamerError(code, message, error.details ?? undefined);
    }
}
let loadedWs;
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
export class StreamerClient {
    /** The WebSocket API, e.g. `ws://localhost:3001` or `wss://…/prod`. */
    url;
    options;
    currentState = "idle";
    link;
    opening;
    failure;
    waiters = [];
    routes = new Map();
    listeners = new Set();
    pendingCancels = new Set();
    heartbeat;
    wakeBackoff;
    reconnectCount = 0;
    currentConnectionId;
    constructor(url, options = {}) {
        this.url = url;
        this.options = options;
    }
    /** The socket's state. */
    get state() {
        return this.currentState;
    }
    /** This socket's connection id as the last `ping` reported it. */
    get connectionId() {
        return this.currentConnectionId;
    }
    /** How many times the client has reconnected after a drop. */
    get reconnects() {
        return this.reconnectCount;
    }
    // -- lifecycle -----------------------------------------------------------------------
    /**
     * Open the socket (one attempt); `request` and the others call it on first use.
     * Rejects with `StreamerConnectionError` when the server is unreachable or refuses
     * the token (`code` UNAUTHORIZED, `statusCode` 401/403 on Node) or the user has too
     * many connections (RATE_LIMITED, 429); the client is then closed.
     */
    connect() {
        if (this.opening === undefined) {
            if (this.failure !== undefined)
                return Promise.reject(this.failure);
            this.setState("connecting");
            this.opening = this.openLink(0).then((link) => {
                if (this.currentState === "closed") {
                    closeQuietly(link.socket);
                    throw this.failure ?? new StreamerConnectionError("the client is closed");
                }
                this.use(link);
            }, (error) => {
                const failure = asConnectionError(error);
                this.setState("closed");
                this.fail(failure);
                throw failure;
            });
        }
        return this.opening;
    }
    /** Close the socket; requests still waiting reject with `StreamerConnectionError`. */
    async close() {
        if (this.currentState === "closed")
            return;
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
    onNotification(listener) {
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
    request(action, payload, options = {}) {
        const requestId = options.requestId ?? newId();
        let frame;
        try {
            frame = encodeFrame(requestId, action, payload, options.metadata);
        }
        catch (error) {
            return Promise.reject(error);
        }
        return this.run(requestId, frame, requestId, false, options);
    }
    /**
     * Follow an async request made earlier (maybe by another connection) and resolve
     * with its result, reporting its progress on the way. Rejects with NOT_FOUND for an
     * unknown id (or another user's), or with the request's own error.
     */
    subscribe(requestId, options = {}) {
        const subscribeId = newId();
        const frame = encodeFrame(subscribeId, "subscribe", { request_id: requestId }, undefined);
        return this.run(requestId, frame, subscribeId, true, options);
    }
    /** The stored state of an async request; rejects with NOT_FOUND for an unknown id. */
    async status(requestId, options = {}) {
        const data = await this.call("status", { request_id: requestId }, options.timeout ?? 30_000);
        return RequestSnapshot.fromData(data, requestId);
    }
    /** Cancel an async request; the running action stops at its next progress report. */
    async cancel(requestId, options = {}) {
        const data = await this.call("cancel", { request_id: requestId }, options.timeout ?? 30_000);
        return RequestSnapshot.fromData(data, requestId);
    }
    /** Send the `ping` action; resolves with this socket's connection id. */
    async ping(options = {}) {
        const data = await this.call("ping", {}, options.timeout ?? 30_000);
        const connectionId = isObject(data) && typeof data.connection_id === "string" ? data.connection_id : "";
        this.currentConnectionId = connectionId || undefined;
        return connectionId;
    }
    // -- exchanges -----------------------------------------------------------------------
    run(requestId, frame, frameId, followingAlready, options) {
        return new Promise((resolve, reject) => {
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
            let callbacks = Promise.resolve();
            let timer;
            const keys = [requestId];
            const cleanup = () => {
                for (const key of keys)
                    if (this.routes.get(key) === exchange)
                        this.routes.delete(key);
                if (timer !== undefined)
                    clearTimeout(timer);
                signal?.removeEventListener("abort", onAbort);
            };
            // Progress callbacks run in order; the outcome waits for the last one.
            const settle = (outcome) => {
                if (settled)
                    return;
                settled = true;
                cleanup();
                callbacks.then(outcome, reject);
            };
            const report = (update) => {
                const callback = options.onProgress;
                if (callback === undefined || update.percentage < lastPercentage)
                    return;
                lastPercentage = update.percentage;
                callbacks = callbacks.then(() => callback(update));
                callbacks.catch((error) => settle(() => reject(error)));
            };
            const sendNow = (text) => {
                sending = true;
                this.send(text, () => !settled).then((generation) => {
                    sending = false;
                    sentOn = generation;
                    if (firstSentOn < 0)
                        firstSentOn = generation;
                }, (error) => {
                    sending = false;
                    settle(() => reject(error));
                });
            };
            const resubscribe = () => {
                // A fresh frame id, routed here too: the snapshot comes back as a `response`
                // to that id.
                const subscribeId = newId();
                keys.push(subscribeId);
                this.routes.set(subscribeId, exchange);
                sendNow(encodeFrame(subscribeId, "subscribe", { request_id: requestId }, undefined));
            };
            const onAbort = () => {
                if (settled)
                    return;
                if (!acknowledged) {
                    // Not stored yet as far as we know: cancel it if an acknowledgment comes.
                    if (sentOn >= 0)
                        this.pendingCancels.add(requestId);
                    settle(() => reject(aborted(requestId)));
                    return;
                }
                const confirmed = this.cancel(requestId).then((snapshot) => snapshot.raw, () => undefined);
                settle(() => {
                    void confirmed.then((answer) => reject(aborted(requestId, answer)));
                });
            };
            const exchange = {
                message: (message) => {
                    switch (message.type) {
                        case "response": {
                            if (!acknowledged) {
                                settle(() => resolve(message.data));
                                return;
                            }
                            let snapshot;
                            try {
                                snapshot = RequestSnapshot.fromData(message.data, requestId);
                            }
                            catch (error) {
                                settle(() => reject(error));
                                return;
                            }
                            if (snapshot.status === "COMPLETED")
                                settle(() => resolve(snapshot.result));
                            else if (snapshot.isTerminal)
                                settle(() => reject(snapshot.toError()));
                            else if (snapshot.progress > lastPercentage && snapshot.progress > 0)
                                report(progressOf(requestId, snapshot));
                            return;
                        }
                        case "acknowledgment":
                            acknowledged = true;
                            options.onAcknowledged?.(message);
                            // A repeated id answers with the stored status; whatever happened before
                            // is learned (and followed) by subscribing.
                            if (sentOn !== firstSentOn || message.status.toLowerCase() !== "queued")
                                resubscribe();
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
                    if (settled || sending || generation <= sentOn)
                        return;
                    if (acknowledged)
                        resubscribe();
                    else if (this.options.resendUnanswered ?? true)
                        sendNow(frame);
                    else
                        settle(() => reject(new StreamerConnectionError(`the connection dropped before request "${requestId}" was answered; it may or may not have run`)));
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
    call(action, payload, timeoutMs) {
        const callId = newId();
        const frame = encodeFrame(callId, action, payload, undefined);
        return new Promise((resolve, reject) => {
            const usable = this.usableFor(callId);
            if (usable !== undefined) {
                reject(usable);
                return;
            }
            let sending = false;
            let sentOn = -1;
            let settled = false;
            const settle = (outcome) => {
                if (settled)
                    return;
                settled = true;
                clearTimeout(timer);
                this.routes.delete(callId);
                outcome();
            };
            const sendNow = () => {
                sending = true;
                this.send(frame, () => !settled).then((generation) => {
                    sending = false;
                    sentOn = generation;
                }, (error) => {
                    sending = false;
                    settle(() => reject(error));
                });
            };
            const timer = setTimeout(() => settle(() => reject(new RequestTimeout(callId, timeoutMs))), timeoutMs);
            this.routes.set(callId, {
                message: (message) => {
                    if (message.type === "response")
                        settle(() => resolve(message.data));
                    else if (message.type === "error")
                        settle(() => reject(new StreamerError(message.error.code, message.error.message, message.error.details)));
                },
                reconnected: (generation) => {
                    if (!settled && !sending && generation > sentOn)
                        sendNow();
                },
                lost: (error) => settle(() => reject(error)),
            });
            sendNow();
        });
    }
    usableFor(id) {
        if (this.failure !== undefined)
            return this.failure;
        if (this.routes.has(id))
            return new Error(`request "${id}" is already in flight on this client`);
        return undefined;
    }
    // -- the socket ----------------------------------------------------------------------
    /** Send on the live socket, waiting for one if needed; resolves with its generation. */
    async send(text, isStillWanted) {
        const link = await this.liveLink();
        if (!isStillWanted())
            return -1;
        link.socket.send(text);
        this.options.onFrame?.("out", text);
        return link.generation;
    }
    async liveLink() {
        for (;;) {
            if (this.failure !== undefined)
                throw this.failure;
            if (this.currentState === "idle" || this.currentState === "connecting")
                await this.connect();
            const link = this.link;
            if (link?.open)
                return link;
            await new Promise((wake) => this.waiters.push(wake));
        }
    }
    setState(state) {
        if (this.currentState === state)
            return;
        this.currentState = state;
        this.options.onStateChange?.(state);
    }
    wakeWaiters() {
        const waiters = this.waiters;
        this.waiters = [];
        for (const wake of waiters)
            wake();
    }
    use(link) {
        this.link = link;
        this.setState("open");
        this.startHeartbeat(link);
        this.wakeWaiters();
    }
    fail(error) {
        this.failure = error;
        this.wakeWaiters();
        for (const exchange of new Set(this.routes.values()))
            exchange.lost(error);
    }
    async openLink(generation) {
        const token = await this.tokenValue();
        const Impl = await this.webSocketImpl();
        const url = withToken(this.url, token);
        const openTimeoutMs = this.options.openTimeoutMs ?? 10_000;
        return new Promise((resolve, reject) => {
            let socket;
            try {
                socket = new Impl(url);
            }
            catch (error) {
                reject(new StreamerConnectionError(`cannot connect to ${safeUrl(this.url)}: ${describe(error)}`));
                return;
            }
            const link = { socket, generation, open: false };
            let settled = false;
            let statusCode;
            let reason = "";
            const timer = setTimeout(() => {
                if (settled)
                    return;
                settled = true;
                closeQuietly(socket);
                reject(new StreamerConnectionError(`cannot connect to ${safeUrl(this.url)}: no handshake within ${openTimeoutMs} ms`));
            }, openTimeoutMs);
            socket.addEventListener("open", () => {
                if (settled)
                    return;
                settled = true;
                clearTimeout(timer);
                link.open = true;
                resolve(link);
            });
            socket.addEventListener("error", (event) => {
                // Node's `ws` says "Unexpected server response: 401"; a browser says nothing.
                reason = typeof event.message === "string" ? event.message : describe(event.error);
                const match = /Unexpected server response: (\d{3})/.exec(reason);
                if (match?.[1] !== undefined)
                    statusCode = Number(match[1]);
            });
            socket.addEventListener("message", (event) => {
                if (link.open)
                    this.dispatch(event.data);
            });
            socket.addEventListener("close", (event) => {
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
    async tokenValue() {
        const token = this.options.token;
        if (token === undefined || typeof token === "string")
            return token;
        try {
            return await token();
        }
        catch (error) {
            // The type only: the error's text might quote a credential.
            const name = error instanceof Error ? error.name : typeof error;
            throw new StreamerConnectionError(`the token function threw ${name}`);
        }
    }
    async webSocketImpl() {
        if (this.options.WebSocket !== undefined)
            return this.options.WebSocket;
        const platform = globalThis.WebSocket;
        if (platform !== undefined)
            return platform;
        loadedWs ??= loadWs();
        return loadedWs;
    }
    dropped(link, closeCode) {
        this.stopHeartbeat();
        if (this.link !== link || this.currentState === "closed")
            return;
        if (!(this.options.reconnect ?? true)) {
            this.setState("closed");
            this.fail(new StreamerConnectionError(`the connection was closed by the server (code ${closeCode ?? "?"})`));
            return;
        }
        this.setState("reconnecting");
        void this.reopen(link.generation + 1);
    }
    /** Reconnect with exponential backoff and full jitter, then resume every exchange. */
    async reopen(generation) {
        const attempts = this.options.maxReconnectAttempts ?? 10;
        const initialMs = this.options.backoffInitialMs ?? 500;
        const maxMs = this.options.backoffMaxMs ?? 30_000;
        let last;
        for (let attempt = 0; attempt < attempts; attempt += 1) {
            await this.pause(Math.random() * Math.min(maxMs, initialMs * 2 ** attempt));
            if (this.isClosed())
                return;
            let link;
            try {
                link = await this.openLink(generation);
            }
            catch (error) {
                last = asConnectionError(error);
                if (last.statusCode === 401 || last.statusCode === 403)
                    break;
                continue;
            }
            if (this.isClosed()) {
                closeQuietly(link.socket);
                return;
            }
            this.reconnectCount += 1;
            this.use(link);
            for (const requestId of this.pendingCancels)
                void this.cancel(requestId).catch(() => undefined);
            this.pendingCancels.clear();
            for (const exchange of new Set(this.routes.values()))
                exchange.reconnected(generation);
            return;
        }
        if (this.isClosed())
            return;
        this.setState("closed");
        const reason = last?.message ?? "no attempts allowed";
        const gaveUp = last?.statusCode !== undefined && last.statusCode !== 429
            ? last
            : new StreamerConnectionError(`gave up after ${attempts} reconnect attempts: ${reason}`);
        this.fail(gaveUp);
    }
    /** A method, not a field read: the state changes across awaits. */
    isClosed() {
        return this.currentState === "closed";
    }
    pause(ms) {
        return new Promise((wake) => {
            const timer = setTimeout(done, ms);
            function done() {
                clearTimeout(timer);
                wake();
            }
            this.wakeBackoff = done;
        });
    }
    startHeartbeat(link) {
        this.stopHeartbeat();
        const intervalMs = this.options.heartbeatIntervalMs === undefined ? DEFAULT_HEARTBEAT_INTERVAL_MS : this.options.heartbeatIntervalMs;
        if (intervalMs === null)
            return;
        const timeoutMs = this.options.heartbeatTimeoutMs ?? 30_000;
        this.heartbeat = setInterval(() => {
            this.ping({ timeout: timeoutMs }).catch(() => {
                // A socket that does not answer is dead even if it looks open: drop it now.
                if (!link.open)
                    return;
                link.open = false;
                closeQuietly(link.socket);
                this.dropped(link, undefined);
            });
        }, intervalMs);
    }
    stopHeartbeat() {
        if (this.heartbeat !== undefined)
            clearInterval(this.heartbeat);
        this.heartbeat = undefined;
    }
    dispatch(data) {
        if (typeof data !== "string")
            return;
        this.options.onFrame?.("in", data);
        const message = decodeServerMessage(data);
        if (message === undefined)
            return;
        try {
            this.options.onMessage?.(message);
        }
        catch (error) {
            console.error("streamer client: onMessage threw; the message is still delivered", error);
        }
        if (message.type === "notification") {
            for (const listener of this.listeners) {
                try {
                    listener(message);
                }
                catch (error) {
                    console.error("streamer client: a notification listener threw", error);
                }
            }
            return;
        }
        const requestId = message.request_id;
        if (requestId === undefined)
            return;
        if (this.pendingCancels.delete(requestId) && message.type === "acknowledgment") {
            void this.cancel(requestId).catch(() => undefined);
        }
        this.routes.get(requestId)?.message(message);
    }
}
function isObject(value) {
    return typeof value === "object" && value !== null && !Array.isArray(value);
}
function newId() {
    const crypto = globalThis.crypto;
    if (typeof crypto?.randomUUID === "function")
        return crypto.randomUUID().replaceAll("-", "");
    // randomUUID needs a secure context; getRandomValues does not.
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
/** The JSON text frame; refuses locally what API Gateway would close the socket for (over 32 KB). */
function encodeFrame(id, action, payload, metadata) {
    const message = { id, action, payload: payload ?? {} };
    if (metadata !== undefined && Object.keys(metadata).length > 0)
        message.metadata = metadata;
    const frame = JSON.stringify(message);
    const size = new TextEncoder().encode(frame).length;
    if (size > MAX_FRAME_BYTES) {
        throw new StreamerError("PAYLOAD_TOO_LARGE", `message is ${size} bytes; one frame (all a WebSocket client sends) is at most ${MAX_FRAME_BYTES}`, { size, limit: MAX_FRAME_BYTES });
    }
    return frame;
}
function aborted(requestId, answer) {
    return new StreamerError("CANCELLED", "the request was aborted", {
        request_id: requestId,
        ...(answer !== undefined ? { cancelled: answer.cancelled, status: answer.status } : {}),
    });
}
function progressOf(requestId, snapshot) {
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
function withToken(url, token) {
    if (token === undefined)
        return url;
    const target = new URL(url);
    target.searchParams.set("Authorization", token);
    return target.toString();
}
/** The URL without its query, so a token in it never reaches a message or a log. */
function safeUrl(url) {
    try {
        const parsed = new URL(url);
        parsed.search = "";
        parsed.hash = "";
        return parsed.toString();
    }
    catch {
        return "the WebSocket URL";
    }
}
function describe(error) {
    if (error instanceof Error)
        return error.message || error.name;
    return typeof error === "string" ? error : "unknown error";
}
function refusal(url, statusCode, reason) {
    if (statusCode !== undefined) {
        return new StreamerConnectionError(`${safeUrl(url)} refused the connection: HTTP ${statusCode}`, statusCode);
    }
    const why = reason || "the server refused the handshake or could not be reached";
    return new StreamerConnectionError(`cannot connect to ${safeUrl(url)}: ${why}`);
}
function asConnectionError(error) {
    if (error instanceof StreamerConnectionError)
        return error;
    return new StreamerConnectionError(`the connection failed: ${describe(error)}`);
}
function closeQuietly(socket) {
    try {
        const terminate = socket.terminate;
        if (typeof terminate === "function")
            terminate.call(socket);
        else
            socket.close(1000);
    }
    catch {
        // Already closed.
    }
}
function closeAndWait(socket) {
    return new Promise((done) => {
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
        }
        catch {
            clearTimeout(timer);
            done();
        }
    });
}
async function loadWs() {
    // A computed specifier: browsers and bundlers never try to resolve `ws`.
    const specifier = "ws";
    try {
        const module = (await import(/* @vite-ignore */ /* webpackIgnore: true */ specifier));
        const Impl = module.WebSocket ?? module.default;
        if (Impl !== undefined)
            return Impl;
    }
    catch {
        // Reported below.
    }
    loadedWs = undefined;
    throw new StreamerConnectionError("this runtime has no WebSocket: on Node 20, install the `ws` package (npm install ws)");
}

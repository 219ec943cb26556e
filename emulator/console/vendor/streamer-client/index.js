/** `@streamer/client`: the browser and Node client of a Streamer WebSocket API. */
export { DEFAULT_HEARTBEAT_INTERVAL_MS, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, RequestSnapshot, StreamerClient, } from "./client.js";
export { ERROR_CODES, RequestTimeout, StreamerConnectionError, StreamerError, isErrorCode, } from "./errors.js";
export { decodeServerMessage, } from "./protocol.js";

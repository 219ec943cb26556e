/** `@streamer/client`: the browser and Node client of a Streamer WebSocket API. */

export {
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  MAX_FRAME_BYTES,
  MAX_MESSAGE_BYTES,
  RequestSnapshot,
  StreamerClient,
  type ActionMapOf,
  type ActionTypes,
  type ConnectionState,
  type PayloadOf,
  type ProgressCallback,
  type RequestOptions,
  type ResultOf,
  type StreamerClientOptions,
  type SubscribeOptions,
  type TokenSource,
  type UntypedActions,
  type WebSocketFactory,
  type WebSocketLike,
} from "./client.js";
export {
  ERROR_CODES,
  RequestTimeout,
  StreamerConnectionError,
  StreamerError,
  isErrorCode,
  type ErrorCode,
} from "./errors.js";
export {
  decodeServerMessage,
  type Acknowledgment,
  type Complete,
  type ErrorBody,
  type ErrorMessage,
  type JsonObject,
  type Notification,
  type ProgressUpdate,
  type Response,
  type ServerMessage,
} from "./protocol.js";

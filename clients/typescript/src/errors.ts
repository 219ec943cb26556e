/** The error hierarchy: one root, `StreamerError`, carrying a wire error code. */

/** Every error code of the wire protocol. */
export const ERROR_CODES = [
  "VALIDATION_ERROR",
  "UNAUTHORIZED",
  "NOT_FOUND",
  "INVALID_ACTION",
  "INTERNAL_ERROR",
  "TIMEOUT",
  "RATE_LIMITED",
  "PROCESSING_FAILED",
  "CANCELLED",
  "PAYLOAD_TOO_LARGE",
] as const;

/** One of `ERROR_CODES`. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** Whether a string is a known wire error code. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && (ERROR_CODES as readonly string[]).includes(value);
}

/**
 * An error with a wire code: what the server answered, or what the client decided.
 * Catch this one type; `code` says which case it is.
 */
export class StreamerError extends Error {
  /** The wire error code, e.g. `VALIDATION_ERROR`. */
  readonly code: ErrorCode;
  /** JSON details (pydantic's error list for `VALIDATION_ERROR`, limits…), or undefined. */
  readonly details: unknown;

  constructor(code: ErrorCode, message: string, details?: unknown) {
    super(message);
    this.name = "StreamerError";
    this.code = code;
    this.details = details;
  }
}

const STATUS_CODES: Readonly<Record<number, ErrorCode>> = {
  401: "UNAUTHORIZED",
  403: "UNAUTHORIZED",
  429: "RATE_LIMITED",
};

/**
 * The socket could not be opened, was refused, or was lost for good.
 * `statusCode` is the HTTP status of a refused handshake (401, 403, 429) where the
 * platform tells it (Node's `ws` does; a browser's `WebSocket` never does).
 */
export class StreamerConnectionError extends StreamerError {
  readonly statusCode: number | undefined;

  constructor(message: string, statusCode?: number) {
    const code = (statusCode !== undefined && STATUS_CODES[statusCode]) || "INTERNAL_ERROR";
    super(code, message, statusCode !== undefined ? { status_code: statusCode } : undefined);
    this.name = "StreamerConnectionError";
    this.statusCode = statusCode;
  }
}

/** No final answer within the client-side timeout (the request may still run). */
export class RequestTimeout extends StreamerError {
  readonly requestId: string;

  constructor(requestId: string, timeoutMs: number) {
    super("TIMEOUT", `no answer to request "${requestId}" within ${timeoutMs} ms`, {
      request_id: requestId,
      timeout_ms: timeoutMs,
    });
    this.name = "RequestTimeout";
    this.requestId = requestId;
  }
}

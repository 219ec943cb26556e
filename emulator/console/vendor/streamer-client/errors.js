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
];
/** Whether a string is a known wire error code. */
export function isErrorCode(value) {
    return typeof value === "string" && ERROR_CODES.includes(value);
}
/**
 * An error with a wire code: what the server answered, or what the client decided.
 * Catch this one type; `code` says which case it is.
 */
export class StreamerError extends Error {
    /** The wire error code, e.g. `VALIDATION_ERROR`. */
    code;
    /** JSON details (pydantic's error list for `VALIDATION_ERROR`, limits…), or undefined. */
    details;
    constructor(code, message, details) {
        super(message);
        this.name = "StreamerError";
        this.code = code;
        this.details = details;
    }
}
const STATUS_CODES = {
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
    statusCode;
    constructor(message, statusCode) {
        const code = (statusCode !== undefined && STATUS_CODES[statusCode]) || "INTERNAL_ERROR";
        super(code, message, statusCode !== undefined ? { status_code: statusCode } : undefined);
        this.name = "StreamerConnectionError";
        this.statusCode = statusCode;
    }
}
/** No final answer within the client-side timeout (the request may still run). */
export class RequestTimeout extends StreamerError {
    requestId;
    constructor(requestId, timeoutMs) {
        super("TIMEOUT", `no answer to request "${requestId}" within ${timeoutMs} ms`, {
            request_id: requestId,
            timeout_ms: timeoutMs,
        });
        this.name = "RequestTimeout";
        this.requestId = requestId;
    }
}

/** The wire protocol's server messages, and reading one from a text frame. */

import { type ErrorCode, isErrorCode } from "./errors.js";

/** A JSON object. */
export type JsonObject = { [key: string]: unknown };

/** The answer to a sync action or a built-in. */
export interface Response {
  type: "response";
  timestamp: string;
  request_id: string;
  success: boolean;
  data: unknown;
}

/** An async action was queued (or was already, for a repeated id). */
export interface Acknowledgment {
  type: "acknowledgment";
  timestamp: string;
  request_id: string;
  status: string;
  message: string;
}

/** Progress of a running async action; `percentage` never decreases. */
export interface ProgressUpdate {
  type: "progress";
  timestamp: string;
  request_id: string;
  percentage: number;
  message: string;
  metadata: JsonObject;
}

/** An async action finished successfully. */
export interface Complete {
  type: "complete";
  timestamp: string;
  request_id: string;
  success: true;
  result: unknown;
}

/** `{code, message, details}` inside an error message. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: unknown;
}

/** Something failed; `request_id` is present when known. */
export interface ErrorMessage {
  type: "error";
  timestamp: string;
  request_id?: string;
  error: ErrorBody;
}

/** A server push, not tied to a request. */
export interface Notification {
  type: "notification";
  timestamp: string;
  topic: string | null;
  data: unknown;
}

/** Any message the server sends. */
export type ServerMessage =
  | Response
  | Acknowledgment
  | ProgressUpdate
  | Complete
  | ErrorMessage
  | Notification;

const TYPES = new Set(["response", "acknowledgment", "progress", "complete", "error", "notification"]);

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Read a server frame; undefined when it is not a server message this client knows
 * (a newer server's message type is ignored, not fatal).
 */
export function decodeServerMessage(text: string): ServerMessage | undefined {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(body) || typeof body.type !== "string" || !TYPES.has(body.type)) return undefined;
  const timestamp = typeof body.timestamp === "string" ? body.timestamp : "";
  const requestId = typeof body.request_id === "string" ? body.request_id : undefined;
  switch (body.type) {
    case "response":
      if (requestId === undefined) return undefined;
      return { type: "response", timestamp, request_id: requestId, success: body.success !== false, data: body.data };
    case "acknowledgment":
      if (requestId === undefined) return undefined;
      return {
        type: "acknowledgment",
        timestamp,
        request_id: requestId,
        status: typeof body.status === "string" ? body.status : "queued",
        message: typeof body.message === "string" ? body.message : "",
      };
    case "progress":
      if (requestId === undefined || typeof body.percentage !== "number") return undefined;
      return {
        type: "progress",
        timestamp,
        request_id: requestId,
        percentage: body.percentage,
        message: typeof body.message === "string" ? body.message : "",
        metadata: isObject(body.metadata) ? body.metadata : {},
      };
    case "complete":
      if (requestId === undefined) return undefined;
      return { type: "complete", timestamp, request_id: requestId, success: true, result: body.result };
    case "error": {
      const error = isObject(body.error) ? body.error : {};
      const message: ErrorMessage = {
        type: "error",
        timestamp,
        error: {
          code: isErrorCode(error.code) ? error.code : "INTERNAL_ERROR",
          message: typeof error.message === "string" ? error.message : "",
          details: error.details ?? undefined,
        },
      };
      if (requestId !== undefined) message.request_id = requestId;
      return message;
    }
    default:
      return {
        type: "notification",
        timestamp,
        topic: typeof body.topic === "string" ? body.topic : null,
        data: body.data,
      };
  }
}

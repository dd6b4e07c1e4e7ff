/**
 * Errors of the framecast JavaScript client: one root, structured fields.
 *
 *     FramecastError
 *     ├── ProtocolError      a message does not follow the wire format
 *     ├── InvalidConfig      a stream or session config can't work (HTTP 422); `field` names it
 *     ├── InvalidChunk       a chunk does not match its stream (local check, or the server's); `seq`
 *     ├── StateError         a call the writer's state does not allow
 *     ├── TransportError     the server could not be reached, or the websocket broke for good
 *     └── ServerError        the server answered with an error; `status`, `code`
 *         ├── SessionNotFound    no such session (HTTP 404, close code 4404)
 *         └── SessionFailed      the session failed on the server; `reason`
 *
 * The same tree as the Python SDK's framecast.errors. Every error carries `code`, `field` and
 * `seq` (null when they do not apply), so a handler can tell what failed without parsing text.
 * @module
 */

/** Root of every error the framecast client throws. */
export class FramecastError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string|null, field?: string|null, seq?: number|null, status?: number|null,
   *          detail?: unknown, cause?: unknown}} [info]
   */
  constructor(message, info = {}) {
    super(message, info.cause === undefined ? undefined : { cause: info.cause });
    this.name = new.target.name;
    /** The server's machine-readable error code (`invalid_config`, `invalid_chunk`, ...), or null. */
    this.code = info.code ?? null;
    /** Dotted path of the config value at fault (`streams.0.width`), or null. */
    this.field = info.field ?? null;
    /** Sequence number of the chunk at fault, or null. */
    this.seq = info.seq ?? null;
    /** HTTP status of a REST error, or null. */
    this.status = info.status ?? null;
    /** The server's whole error body, when there was one. */
    this.detail = info.detail ?? null;
  }
}

/** A message does not follow the framecast wire format. */
export class ProtocolError extends FramecastError {
  constructor(message, info = {}) { super(message, { code: "protocol_error", ...info }); }
}

/** A session or stream configuration was refused; `field` names the value at fault. */
export class InvalidConfig extends FramecastError {
  constructor(message, info = {}) { super(message, { code: "invalid_config", ...info }); }
}

/** A chunk does not match its stream; `seq` is set when the server refused it. */
export class InvalidChunk extends FramecastError {
  constructor(message, info = {}) { super(message, { code: "invalid_chunk", ...info }); }
}

/** The call is not allowed in the writer's current state (a write before open(), ...). */
export class StateError extends FramecastError {
  constructor(message, info = {}) { super(message, { code: "state_error", ...info }); }
}

/** The server could not be reached, or the connection to it broke and could not be resumed. */
export class TransportError extends FramecastError {
  constructor(message, info = {}) { super(message, { code: "transport_error", ...info }); }
}

/** The server answered with an error; `status` and `code` say which. */
export class ServerError extends FramecastError {}

/** The server has no session with that id (or it belongs to another API key). */
export class SessionNotFound extends ServerError {
  constructor(message, info = {}) { super(message, { code: "session_not_found", ...info }); }
}

/** The session failed on the server; nothing more is written. `reason` is the server's words. */
export class SessionFailed extends ServerError {
  /** @param {string} reason */
  constructor(reason, info = {}) {
    super(`session failed: ${reason}`, { code: "session_failed", ...info });
    this.reason = reason;
  }
}

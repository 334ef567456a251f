// The API client: every request the dashboard makes goes through `api`, so that a sign-in
// token (once the security work lands) is added in exactly one place: `setToken`.

let token = null;

/** Sets (or clears, with null) the bearer token sent with every request. */
export function setToken(value) {
  token = value;
}

/** A refused request: `problem` is the RFC 9457 body (`type`, `title`, `detail`, `errors`). */
export class ApiError extends Error {
  constructor(status, problem, headers) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.headers = headers;
  }

  /** Field errors keyed by field name (RESO names for bodies, parameter names for queries). */
  get fieldErrors() {
    const errors = {};
    for (const e of this.problem.errors || []) {
      if (e.field && !errors[e.field]) errors[e.field] = e.message;
    }
    return errors;
  }

  /** A concurrent edit: someone changed the listing since it was loaded. */
  get isConflict() {
    return this.status === 409 || this.status === 412;
  }
}

/**
 * Sends a request; resolves with `{ body, headers, status }` for 2xx, rejects with ApiError.
 * `body` (an object) is sent as JSON; `ifMatch` (a version number) becomes `If-Match`.
 */
export async function api(method, path, { body, ifMatch, signal } = {}) {
  const headers = { accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (ifMatch !== undefined && ifMatch !== null) headers['if-match'] = `"${ifMatch}"`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, { title: 'Network error', detail: 'the server cannot be reached' });
  }
  const type = response.headers.get('content-type') || '';
  const parsed = type.includes('json') ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) throw new ApiError(response.status, typeof parsed === 'object' ? parsed : null, response.headers);
  return { body: parsed, headers: response.headers, status: response.status };
}

/** Query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** The live event feed (Server-Sent Events), with the token as a query parameter if any. */
export function liveFeed(params = {}) {
  return new EventSource(`/api/v1/listing-events${query(params)}`);
}

// The API client: every request the dashboard makes goes through `api`, so the session's
// access token is added in exactly one place. Sessions live in sessionStorage (one tab's
// life); an expired access token is refreshed once, transparently.

const STORE = 'keh.session';
let session = null;
try {
  session = JSON.parse(sessionStorage.getItem(STORE) || 'null');
} catch {
  session = null;
}
const watchers = new Set();

/** The signed-in user (`{ username, role, agent_key, … }`) or null. */
export function currentUser() {
  return session?.user || null;
}

/** Calls `callback(user)` now and whenever the session changes. */
export function onSession(callback) {
  watchers.add(callback);
  callback(currentUser());
  return () => watchers.delete(callback);
}

function setSession(next) {
  session = next;
  if (next) sessionStorage.setItem(STORE, JSON.stringify(next));
  else sessionStorage.removeItem(STORE);
  for (const watch of watchers) watch(currentUser());
}

/** Signs in; rejects with ApiError (401 for wrong credentials). */
export async function signIn(username, password) {
  const { body } = await api('POST', '/api/v1/auth/token', { body: { username, password }, anonymous: true });
  setSession(body);
  return body.user;
}

/** Signs out: the server revokes the session's refresh token. */
export async function signOut() {
  const refresh = session?.refresh_token;
  setSession(null);
  if (refresh) await api('POST', '/api/v1/auth/sign-out', { body: { refresh_token: refresh }, anonymous: true }).catch(() => {});
}

let refreshing = null;
async function refreshSession() {
  if (!session?.refresh_token) return false;
  refreshing ||= fetch('/api/v1/auth/refresh', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ refresh_token: session.refresh_token }),
  }).then(async (response) => {
    if (!response.ok) {
      setSession(null);
      return false;
    }
    setSession(await response.json());
    return true;
  }).catch(() => false).finally(() => { refreshing = null; });
  return refreshing;
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
export async function api(method, path, { body, ifMatch, signal, anonymous = false, retried = false } = {}) {
  const headers = { accept: 'application/json' };
  if (session?.access_token && !anonymous) headers.authorization = `Bearer ${session.access_token}`;
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
  if (response.status === 401 && headers.authorization && !retried && await refreshSession()) {
    return api(method, path, { body, ifMatch, signal, retried: true });
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

/**
 * The live event feed (Server-Sent Events) from `lastEventId` on. EventSource cannot send
 * headers, so a signed-in session fetches a one-minute feed ticket first: the access token
 * itself never goes into a URL (where proxies and logs would keep it).
 */
export async function liveFeed(params = {}, lastEventId = null) {
  let ticket;
  if (session?.access_token) {
    try {
      ({ body: { ticket } } = await api('POST', '/api/v1/auth/feed-ticket'));
    } catch {
      ticket = undefined; // signed out meanwhile, or the server is away: read anonymously
    }
  }
  return new EventSource(`/api/v1/listing-events${query({ ...params, ticket, last_event_id: lastEventId })}`);
}

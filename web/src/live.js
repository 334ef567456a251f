// One live connection per page (Server-Sent Events through EventSource). EventSource
// reconnects by itself after a network blip; when the server refuses a reconnection (its
// one-minute ticket expired, or an anonymous page slept past how far back the server
// replays), the connection closes and is opened here again with a fresh ticket, resuming
// after the last event seen; if that keeps failing it starts from now, and views reload.
// Views subscribe to listing events.

import { liveFeed, onSession } from './api.js';

export const EVENT_TYPES = [
  'ListingCreated', 'ListingDetailsUpdated', 'ListingPriceChanged', 'ListingStatusChanged',
  'MediaAdded', 'MediaRemoved', 'MediaReordered', 'OpenHouseScheduled', 'OpenHouseCanceled',
];

const subscribers = new Set();
const watchers = new Set();
let source = null;
let state = 'connecting';
let lastEventId = null;
let failures = 0;
// Each connect() takes a number; one that a later connect() overtook while it fetched its
// ticket closes what it opened, so there is never more than one connection.
let attempt = 0;

function setState(next) {
  state = next;
  for (const watch of watchers) watch(state);
}

async function connect() {
  const mine = ++attempt;
  const opened = await liveFeed({}, lastEventId);
  if (mine !== attempt) {
    opened.close();
    return;
  }
  source = opened;
  opened.addEventListener('open', () => {
    failures = 0;
    setState('live');
  });
  opened.addEventListener('error', () => {
    if (opened.readyState !== EventSource.CLOSED) {
      setState('reconnecting');
      return;
    }
    setState('offline');
    failures += 1;
    if (failures >= 2 && lastEventId !== null) {
      // Resuming is refused: start from now; views reload what they show.
      lastEventId = null;
      for (const subscriber of subscribers) subscriber({ EventType: 'Resync' });
    }
    const waited = attempt;
    setTimeout(() => {
      if (source === opened && attempt === waited) connect();
    }, Math.min(30000, 1000 * 2 ** Math.min(failures - 1, 5)));
  });
  for (const type of EVENT_TYPES) {
    opened.addEventListener(type, (message) => {
      let envelope;
      try {
        envelope = JSON.parse(message.data);
      } catch {
        return;
      }
      lastEventId = message.lastEventId || lastEventId;
      envelope.StreamSequence = message.lastEventId;
      for (const subscriber of subscribers) subscriber(envelope);
    });
  }
}

let starting = false;
function start() {
  if (starting) return;
  starting = true;
  connect();
  // Signing in or out reconnects, so the feed is read with the caller's own rights (an
  // installation may refuse anonymous reading), resuming after the last event seen.
  let user = null;
  let first = true;
  onSession((next) => {
    const changed = (next?.user_id || null) !== (user?.user_id || null);
    user = next;
    if (first) {
      first = false;
      return;
    }
    if (changed) {
      source?.close();
      source = null;
      connect();
    }
  });
}

/** Calls `callback(envelope)` for every listing event; returns the unsubscribe function. */
export function onListingEvent(callback) {
  if (!source) start();
  subscribers.add(callback);
  return () => subscribers.delete(callback);
}

/** Calls `callback(state)` now and whenever the connection state changes. */
export function onConnection(callback) {
  if (!source) start();
  watchers.add(callback);
  callback(state);
  return () => watchers.delete(callback);
}

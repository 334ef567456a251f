// One live connection per page (Server-Sent Events through EventSource, which reconnects by
// itself and resumes after the last event id it saw). Views subscribe to listing events.

import { liveFeed } from './api.js';

export const EVENT_TYPES = [
  'ListingCreated', 'ListingDetailsUpdated', 'ListingPriceChanged', 'ListingStatusChanged',
  'MediaAdded', 'MediaRemoved', 'MediaReordered', 'OpenHouseScheduled', 'OpenHouseCanceled',
];

const subscribers = new Set();
const watchers = new Set();
let source = null;
let state = 'connecting';

function setState(next) {
  state = next;
  for (const watch of watchers) watch(state);
}

function connect() {
  source = liveFeed();
  source.addEventListener('open', () => setState('live'));
  source.addEventListener('error', () => setState(source.readyState === EventSource.CLOSED ? 'offline' : 'reconnecting'));
  for (const type of EVENT_TYPES) {
    source.addEventListener(type, (message) => {
      let envelope;
      try {
        envelope = JSON.parse(message.data);
      } catch {
        return;
      }
      envelope.StreamSequence = message.lastEventId;
      for (const subscriber of subscribers) subscriber(envelope);
    });
  }
}

/** Calls `callback(envelope)` for every listing event; returns the unsubscribe function. */
export function onListingEvent(callback) {
  if (!source) connect();
  subscribers.add(callback);
  return () => subscribers.delete(callback);
}

/** Calls `callback(state)` now and whenever the connection state changes. */
export function onConnection(callback) {
  if (!source) connect();
  watchers.add(callback);
  callback(state);
  return () => watchers.delete(callback);
}

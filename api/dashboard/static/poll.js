// Refreshing while a study runs: one tick every few seconds, never two at once, stopped when the study settles.

export const ACTIVE_STATUSES = ["queued", "running", "stopping"];
export const POLL_MS = 4000;

export function isActive(status) {
  return ACTIVE_STATUSES.includes(status);
}

/**
 * Calls `tick` every `ms` until it resolves to false. A failing tick is reported and retried, so a server restart
 * does not stop a page; `onRecover` runs at the first success after a failure. `ensure()` restarts a stopped poller.
 * The header's "live" mark shows while polling and `isLive()` (e.g. "the study runs") holds.
 */
export function poller(tick, options = {}) {
  const { ms = POLL_MS, onError = console.error, onRecover = () => {}, isLive = () => true } = options;
  let timer = null;
  let running = false;
  let failing = false;
  const live = document.getElementById("live");
  const show = (on) => {
    if (live) live.hidden = !on;
  };
  async function step() {
    timer = null;
    let again = true;
    try {
      again = await tick();
      if (failing) onRecover();
      failing = false;
    } catch (err) {
      failing = true;
      onError(err);
    }
    if (again && running) {
      show(isLive());
      timer = setTimeout(step, ms);
    } else {
      stop();
    }
  }
  function stop() {
    running = false;
    show(false);
    if (timer) clearTimeout(timer);
    timer = null;
  }
  return {
    ensure() {
      if (running) return;
      running = true;
      show(isLive());
      timer = setTimeout(step, ms);
    },
    stop,
    get running() {
      return running;
    },
  };
}

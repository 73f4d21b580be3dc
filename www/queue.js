// The generation queue of the page: Generate while a generation runs adds a job (its settings
// as they were when it was queued); jobs run one after the other in the order they were added.
// The list shows the running job and the waiting ones, each with a Cancel button.

export class JobQueue {
  #waiting = [];
  #running = null;
  #next = 1;
  #list;
  #onCancelRunning;
  #describe;

  /**
   * list: the <ol> that shows the jobs; describe(params) -> one line of text for a job;
   * onCancelRunning(): cancels the running job (its AbortController).
   */
  constructor(list, { describe, onCancelRunning }) {
    this.#list = list;
    this.#describe = describe;
    this.#onCancelRunning = onCancelRunning;
  }

  get running() { return this.#running; }
  get waiting() { return this.#waiting.slice(); }

  /** A new job for `params` (not yet queued): {id, params}. */
  job(params) { return { id: this.#next++, params }; }

  /** Adds a job at the end; returns its place in the waiting list (1-based). */
  push(job) {
    this.#waiting.push(job);
    this.render();
    return this.#waiting.length;
  }

  /** Takes the next waiting job as the running one (or null when none waits). */
  start(job = this.#waiting.shift() ?? null) {
    this.#running = job;
    this.render();
    return job;
  }

  finish() {
    this.#running = null;
    this.render();
  }

  /** Removes a waiting job; cancels the running one when `id` is its. Returns whether it was found. */
  cancel(id) {
    if (this.#running && this.#running.id === id) {
      this.#onCancelRunning();
      return true;
    }
    const i = this.#waiting.findIndex((j) => j.id === id);
    if (i < 0) return false;
    this.#waiting.splice(i, 1);
    this.render();
    return true;
  }

  clear() {
    this.#waiting = [];
    this.render();
  }

  render() {
    const items = [];
    const item = (job, state) => {
      const li = document.createElement("li");
      li.dataset.job = String(job.id);
      li.dataset.state = state;
      const text = document.createElement("span");
      text.className = "job-text";
      text.textContent = `${state === "running" ? "Running" : "Waiting"} · #${job.id} · ${this.#describe(job.params)}`;
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.className = "secondary job-cancel";
      cancel.textContent = "Cancel";
      cancel.setAttribute("aria-label", `Cancel job ${job.id}${state === "running" ? " (running)" : ""}`);
      cancel.onclick = () => this.cancel(job.id);
      li.append(text, cancel);
      return li;
    };
    if (this.#running) items.push(item(this.#running, "running"));
    for (const j of this.#waiting) items.push(item(j, "waiting"));
    this.#list.replaceChildren(...items);
    this.#list.hidden = items.length === 0;
  }
}

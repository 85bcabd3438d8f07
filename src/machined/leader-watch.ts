// Watches leader processes through pidfds: one worker thread sits in poll() over every pidfd
// (plus an eventfd to wake it when the set changes) and reports each process that exits.
// A pidfd names one process for its whole life, so a recycled PID never fools us.
import { closeSync, readSync, writeSync } from 'node:fs';
import { eventfd, pidfdOpen, pidfdSendSignal, pollReadable } from '../sys/libc.js';

export class LeaderWatch {
  private readonly byFd = new Map<number, { pid: number; onExit: () => void }>();
  private readonly byPid = new Map<number, number>();
  private wakeFd = -1;
  private running = false;
  private closed = false;

  /**
   * Open a pidfd for `pid` and call `onExit` once it exits. Returns false when the process is
   * already gone (ESRCH).
   */
  watch(pid: number, onExit: () => void): boolean {
    if (this.byPid.has(pid)) this.unwatch(pid);
    let fd: number;
    try {
      fd = pidfdOpen(pid);
    } catch {
      return false;
    }
    this.byFd.set(fd, { pid, onExit });
    this.byPid.set(pid, fd);
    this.kick();
    return true;
  }

  unwatch(pid: number): void {
    const fd = this.byPid.get(pid);
    if (fd === undefined) return;
    this.byPid.delete(pid);
    this.byFd.delete(fd);
    // Close only after the poller has been woken and returned, so poll() never sees a reused fd.
    this.pendingClose.push(fd);
    this.kick();
  }

  /** Send a signal through the pidfd; false if the process is not watched or gone. */
  signal(pid: number, sig: number): boolean {
    const fd = this.byPid.get(pid);
    if (fd === undefined) return false;
    try {
      pidfdSendSignal(fd, sig);
      return true;
    } catch {
      return false;
    }
  }

  isWatched(pid: number): boolean {
    return this.byPid.has(pid);
  }

  close(): void {
    this.closed = true;
    for (const pid of [...this.byPid.keys()]) this.unwatch(pid);
    this.kick();
  }

  private pendingClose: number[] = [];

  private kick(): void {
    if (this.wakeFd < 0) this.wakeFd = eventfd();
    if (this.running) {
      const one = Buffer.alloc(8);
      one.writeBigUInt64LE(1n);
      writeSync(this.wakeFd, one);
      return;
    }
    this.running = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    const drain = Buffer.alloc(8);
    for (;;) {
      for (const fd of this.pendingClose.splice(0)) closeSync(fd);
      if (this.closed || this.byFd.size === 0) break;
      const fds = [this.wakeFd, ...this.byFd.keys()];
      let ready: number[];
      try {
        ready = await pollReadable(fds, -1);
      } catch {
        ready = [];
      }
      for (const fd of ready) {
        if (fd === this.wakeFd) {
          try {
            readSync(this.wakeFd, drain);
          } catch {
            // EAGAIN: already drained
          }
          continue;
        }
        const entry = this.byFd.get(fd);
        if (!entry) continue;
        this.unwatch(entry.pid);
        entry.onExit();
      }
    }
    this.running = false;
    for (const fd of this.pendingClose.splice(0)) closeSync(fd);
    if (this.closed && this.wakeFd >= 0) {
      closeSync(this.wakeFd);
      this.wakeFd = -1;
    } else if (!this.closed && this.byFd.size > 0) {
      this.running = true;
      void this.loop();
    }
  }
}

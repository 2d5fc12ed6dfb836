#!/usr/bin/env python3
# A userspace stand-in for tc netem on kernels without sch_netem: holds every packet of
# one NFQUEUE for a fixed delay, then accepts it. Used by deploy/multi-region.sh in its
# router namespace: python netem-nfqueue.py QUEUE DELAY_MS (needs root and fnfqueue).

import collections, sys, threading, time
import fnfqueue

queue, delay_ms = int(sys.argv[1]), float(sys.argv[2])
delay = delay_ms / 1000.0
conn = fnfqueue.Connection()
q = conn.bind(queue)
q.set_mode(0xffff, fnfqueue.COPY_META)
q.fail_open = True
pending = collections.deque()
ready = threading.Condition()

def release():
    while True:
        with ready:
            while not pending:
                ready.wait()
            due, packet = pending[0]
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        with ready:
            pending.popleft()
        packet.accept()

threading.Thread(target=release, daemon=True).start()
print(f"delayer: queue {queue} delay {delay_ms} ms", flush=True)
for packet in conn:
    with ready:
        pending.append((time.monotonic() + delay, packet))
        ready.notify()

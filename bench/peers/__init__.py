"""One small module per job library, all with the same interface, for bench/compare.py.

Each module reads its settings from the environment (see ``common``) when imported, so
the same module configures both the producer (``compare.py --one NAME``) and the
worker process it starts. A module provides:

``CONCURRENCY``                 the worker's concurrency (its best documented setting)
``ENQUEUE``                     how ``enqueue_many`` enqueues, for the table's notes
``async enqueue_many(n)``       put n no-op jobs on the queue (the timed backlog)
``async enqueue_one(sent_ns)``  put one probe job carrying its send time
``worker_argv()``               the command that runs one worker process
``async close()``               drop the producer's connections
``KEYS``                        Redis key patterns it leaves behind (deleted afterwards)
``AMQP_QUEUES``, ``AMQP_EXCHANGES``  ``--amqp`` mode only: the broker queues and per-run
                                exchanges it declared (deleted afterwards)

A library name with a dash is the module with an underscore (``shigoto-bare`` is
``shigoto_bare.py``).

Every handler calls ``common.record(sent_ns)`` and nothing else.
"""

"""From queued captures to storage: queue, encoding, batching, journal, delivery, spool."""

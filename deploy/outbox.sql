-- The recommended outbox table (outboxrelay prints the same DDL when it is missing).
CREATE TABLE public.outbox (
  id            uuid        PRIMARY KEY,
  aggregatetype text        NOT NULL,
  aggregateid   text        NOT NULL,
  type          text        NOT NULL,
  payload       jsonb,
  created_at    timestamptz NOT NULL DEFAULT now()
);

-- An application writing an event the insert-and-delete way: the row never
-- stays in the table, yet the relay sees the insert in the WAL.
-- BEGIN;
--   UPDATE orders SET status = 'shipped' WHERE id = 'order-1';
--   INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
--     VALUES (gen_random_uuid(), 'Order', 'order-1', 'OrderShipped', '{"orderId": "order-1"}');
--   DELETE FROM outbox WHERE aggregateid = 'order-1' AND type = 'OrderShipped';
-- COMMIT;

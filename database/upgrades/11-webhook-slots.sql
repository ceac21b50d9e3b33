-- v10 -> v11: Webhook outbox slots: room for several DTOs of one event

-- A webhook_delivery row's position is now a slot, the event's log position
-- times 4 plus the DTO's place among the event's DTOs (a redaction of a
-- reaction is messaging.message.deleted, then messaging.reaction.removed),
-- so that both have a row of their own, in order. The rows already queued
-- are the first DTO of their event. Negating first keeps every row's key
-- unique at each step (a unique key is checked row by row).
UPDATE webhook_delivery SET position = -position;
UPDATE webhook_delivery SET position = -position * 4;

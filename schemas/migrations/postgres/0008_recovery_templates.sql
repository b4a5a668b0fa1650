-- Message templates saved under a name (overriding the built-in one of that name). Rebuilt
-- from `recovery/template_saved` and `recovery/template_deleted`.
CREATE TABLE recovery_templates (
    template_id   text        PRIMARY KEY,
    subject       text        NOT NULL,
    preheader     text        NOT NULL,
    html          text        NOT NULL,
    text          text        NOT NULL,
    sms           text        NOT NULL,
    updated_at    timestamptz NOT NULL,
    last_position bigint      NOT NULL
);

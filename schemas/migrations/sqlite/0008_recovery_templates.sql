-- Message templates saved under a name (overriding the built-in one of that name). Rebuilt
-- from `recovery/template_saved` and `recovery/template_deleted`.
CREATE TABLE recovery_templates (
    template_id   TEXT        PRIMARY KEY,
    subject       TEXT        NOT NULL,
    preheader     TEXT        NOT NULL,
    html          TEXT        NOT NULL,
    text          TEXT        NOT NULL,
    sms           TEXT        NOT NULL,
    updated_at    TEXT        NOT NULL,
    last_position INTEGER     NOT NULL
);

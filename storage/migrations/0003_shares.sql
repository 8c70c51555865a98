-- Who a file was sent to, as the router saw it: every message that carried
-- a file's URL (1:1, a group chat, a persistent room; forwards and repeats
-- included) is one row. The upload's POST row takes TO_JID and CHAT_TYPE
-- from the first share.
CREATE TABLE shares (
    share_id     BIGSERIAL     PRIMARY KEY,
    resource     VARCHAR(511)  NOT NULL,
    sender       VARCHAR(3071) NOT NULL,
    recipient    VARCHAR(3071) NOT NULL,
    chat_type    VARCHAR(10)   NOT NULL,
    reported_by  VARCHAR(3071) NOT NULL,
    date_time    TIMESTAMPTZ   NOT NULL DEFAULT now()
);
CREATE INDEX shares_resource ON shares (resource, date_time);
CREATE INDEX shares_recipient_time ON shares (recipient, date_time);
CREATE INDEX shares_sender_time ON shares (sender, date_time);

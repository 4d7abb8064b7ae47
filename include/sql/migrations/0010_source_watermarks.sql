-- How far each SQL source has been read: the newest updated_at loaded, per feed and connection.
CREATE TABLE source_watermarks (
    feed         TEXT NOT NULL,
    connection   TEXT NOT NULL,
    watermark    TEXT NOT NULL,          -- ISO timestamp, compared with the source's updated_at
    load_id      BIGINT REFERENCES source_loads (load_id),
    updated_at   {{ ts }} NOT NULL,
    PRIMARY KEY (feed, connection)
);

-- PostgreSQL checks the references of time entries once per statement instead of once per row.
--
-- A foreign key checks (and locks) its parent row for every row written: a million time entries
-- loaded and then claimed meant three million lookups with a row lock each, about three quarters
-- of the time a load spent storing them (bench/README.md). These triggers keep the same rule, that
-- a time entry's contract, load and invoice line exist for as long as the entry refers to them,
-- with one set-based query per statement and one lock per distinct parent. The parents check the
-- other way round: a contract, load or invoice line that a time entry refers to cannot be deleted,
-- re-keyed or truncated, as with a foreign key's NO ACTION.
--
-- SQLite keeps its foreign keys: it checks them in its own B-tree code, cheaply, and has no
-- statement-level triggers to do it otherwise.
{% if dialect == "postgresql" %}
{% set parents = [("contracts", "contract_id", "contract_id", "contract", "TEXT"),
                  ("source_loads", "load_id", "load_id", "source load", "BIGINT"),
                  ("invoice_lines", "line_id", "invoice_line_id", "invoice line", "BIGINT")] %}
ALTER TABLE time_entries
    DROP CONSTRAINT time_entries_contract_id_fkey,
    DROP CONSTRAINT time_entries_load_id_fkey,
    DROP CONSTRAINT time_entries_invoice_line_id_fkey;

CREATE FUNCTION time_entries_check_references() RETURNS trigger AS $$
DECLARE
    refs RECORD;
    missing TEXT;
    entry TEXT;
BEGIN
    -- One pass over the written rows (a transition table is read from disk when it is large): the
    -- distinct references, a few thousand at most, are what the checks below work on.
    SELECT array_agg(DISTINCT contract_id) AS contract_id,
           array_agg(DISTINCT load_id) FILTER (WHERE load_id IS NOT NULL) AS load_id,
           array_agg(DISTINCT invoice_line_id) FILTER (WHERE invoice_line_id IS NOT NULL) AS invoice_line_id
      INTO refs
      FROM (SELECT contract_id, load_id, invoice_line_id FROM written GROUP BY 1, 2, 3) AS distinct_refs;
{% for parent, key, column, name, type in parents %}
    -- Lock each {{ name }} referred to, once, as a foreign key would: none can go before we commit.
    PERFORM 1 FROM {{ parent }} p WHERE p.{{ key }} = ANY (refs.{{ column }}) FOR KEY SHARE;
    SELECT r::TEXT INTO missing FROM unnest(refs.{{ column }}) AS r
     WHERE NOT EXISTS (SELECT 1 FROM {{ parent }} p WHERE p.{{ key }} = r) ORDER BY 1 LIMIT 1;
    IF missing IS NOT NULL THEN
        SELECT min(w.entry_id) INTO entry FROM written w WHERE w.{{ column }}::TEXT = missing;
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
            MESSAGE = 'time entry ' || entry || ' refers to {{ name }} ' || missing || ', which does not exist';
    END IF;
{% endfor %}
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER time_entries_references_insert AFTER INSERT ON time_entries
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION time_entries_check_references();
CREATE TRIGGER time_entries_references_update AFTER UPDATE ON time_entries
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION time_entries_check_references();

{% for parent, key, column, name, type in parents %}
CREATE FUNCTION {{ parent }}_keep_time_entry_references() RETURNS trigger AS $$
DECLARE
    taken {{ type }}[];
    bad RECORD;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        IF EXISTS (SELECT 1 FROM time_entries WHERE {{ column }} IS NOT NULL) THEN
            RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
                MESSAGE = 'cannot truncate {{ parent }}: time entries refer to it';
        END IF;
        RETURN NULL;
    END IF;
    -- The keys taken away first (an UPDATE usually changes none: every load updates its source
    -- load, every contract feed its contracts), so time entries are only looked at when one goes.
    IF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.{{ key }}) INTO taken FROM gone o;
    ELSE
        SELECT array_agg(o.{{ key }}) INTO taken FROM gone o
         WHERE NOT EXISTS (SELECT 1 FROM kept n WHERE n.{{ key }} = o.{{ key }});
    END IF;
    IF taken IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT t.{{ column }} AS ref, t.entry_id INTO bad FROM time_entries t WHERE t.{{ column }} = ANY (taken) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
            MESSAGE = '{{ name }} ' || bad.ref || ' is still referred to by time entry ' || bad.entry_id;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER {{ parent }}_time_entries_delete AFTER DELETE ON {{ parent }}
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION {{ parent }}_keep_time_entry_references();
CREATE TRIGGER {{ parent }}_time_entries_update AFTER UPDATE ON {{ parent }}
    REFERENCING OLD TABLE AS gone NEW TABLE AS kept FOR EACH STATEMENT
    EXECUTE FUNCTION {{ parent }}_keep_time_entry_references();
CREATE TRIGGER {{ parent }}_time_entries_truncate BEFORE TRUNCATE ON {{ parent }}
    FOR EACH STATEMENT EXECUTE FUNCTION {{ parent }}_keep_time_entry_references();
{% endfor %}
{% endif %}

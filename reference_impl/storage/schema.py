"""The relational schema, shared by SQLite and PostgreSQL (two small dialect differences)."""

from __future__ import annotations

TABLES = """
CREATE TABLE IF NOT EXISTS players (
    player_id TEXT PRIMARY KEY,
    currency TEXT NOT NULL,
    balance BIGINT NOT NULL CHECK (balance >= 0),
    seq BIGINT NOT NULL,
    last_hash TEXT NOT NULL,
    version BIGINT NOT NULL,
    limits TEXT,
    identity_verified BOOLEAN NOT NULL DEFAULT FALSE,
    created_us BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    currency TEXT NOT NULL,
    balance BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    transaction_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    player_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    round_id TEXT NOT NULL,
    amount BIGINT NOT NULL,
    state TEXT,
    status TEXT,
    balance BIGINT,
    currency TEXT,
    ts_us BIGINT NOT NULL,
    jackpot BIGINT NOT NULL DEFAULT 0,
    instrument TEXT,
    device TEXT
);
CREATE INDEX IF NOT EXISTS txs_player_round ON txs (player_id, round_id);
CREATE INDEX IF NOT EXISTS txs_ts ON txs (ts_us, transaction_id);
CREATE TABLE IF NOT EXISTS journal (
    stream TEXT NOT NULL,
    seq BIGINT NOT NULL,
    transaction_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    debit_account TEXT NOT NULL,
    credit_account TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    round_id TEXT NOT NULL,
    ts_us BIGINT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (stream, seq)
);
CREATE TABLE IF NOT EXISTS relay_marks (
    publisher TEXT PRIMARY KEY,
    ts_us BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id {serial},
    player_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    severity TEXT NOT NULL,
    outcome TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    evidence TEXT NOT NULL,
    rules_version TEXT NOT NULL,
    transaction_id TEXT
);
CREATE INDEX IF NOT EXISTS alerts_player ON alerts (player_id, id);
CREATE TABLE IF NOT EXISTS declined_deposits (
    transaction_id TEXT PRIMARY KEY,
    player_id TEXT NOT NULL,
    amount BIGINT NOT NULL,
    ts_us BIGINT NOT NULL,
    instrument TEXT,
    device TEXT
);
CREATE INDEX IF NOT EXISTS declined_ts ON declined_deposits (ts_us, transaction_id);
CREATE TABLE IF NOT EXISTS audit_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL,
    entries BIGINT NOT NULL
);
INSERT INTO audit_state (id, generation, entries) VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS audit_chains (
    stream TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_accounts (
    account_id TEXT PRIMARY KEY,
    balance BIGINT NOT NULL
);
"""
"""The audit checkpoint (written only by clean audits, see SqlStorage.audit): ``audit_state``
holds a generation (compare-and-set between auditors) and the number of verified entries,
``audit_chains`` each player's verified chain head, ``audit_accounts`` every account's balance
as the verified entries project it."""

SQLITE_SCHEMA = TABLES.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT")
POSTGRES_SCHEMA = TABLES.format(serial="BIGSERIAL PRIMARY KEY") + """
ALTER TABLE txs ADD COLUMN IF NOT EXISTS jackpot BIGINT NOT NULL DEFAULT 0;
ALTER TABLE txs ADD COLUMN IF NOT EXISTS instrument TEXT;
ALTER TABLE txs ADD COLUMN IF NOT EXISTS device TEXT;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS transaction_id TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS alerts_once ON alerts (rule_id, player_id, transaction_id);
"""

ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "txs": {"jackpot": "BIGINT NOT NULL DEFAULT 0", "instrument": "TEXT", "device": "TEXT"},
    "alerts": {"transaction_id": "TEXT"},
}
AFTER_ADDED_COLUMNS = (
    "CREATE UNIQUE INDEX IF NOT EXISTS alerts_once ON alerts (rule_id, player_id, transaction_id)"
)
"""Index over an added column: SQLite creates it once the column exists. An alert is stored
once per (rule, player, transaction): a rebuilt fraud state re-evaluating events whose alerts
are already stored adds nothing."""
"""Columns added after a table's first release: databases created before get them on open
(PostgreSQL above; SQLite, which has no ADD COLUMN IF NOT EXISTS, in its adapter)."""

POSTGRES_FUNCTIONS = """
CREATE OR REPLACE FUNCTION wallet_house_credit(
    p_account TEXT, p_currency TEXT, p_delta BIGINT
) RETURNS VOID LANGUAGE plpgsql AS $fn$
BEGIN
    -- The system account exists (created with its players); the upsert covers a change of
    -- the shard count between runs.
    UPDATE accounts SET balance = balance + p_delta, version = version + 1
    WHERE account_id = p_account;
    IF NOT FOUND THEN
        INSERT INTO accounts AS a (account_id, kind, currency, balance, version)
        VALUES (p_account, split_part(p_account, ':', 1), p_currency, p_delta, 1)
        ON CONFLICT (account_id) DO UPDATE SET balance = a.balance + EXCLUDED.balance,
                                               version = a.version + 1;
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION wallet_bet(
    p_tx TEXT, p_player TEXT, p_round TEXT, p_amount BIGINT, p_fp TEXT, p_shard INT,
    p_ts BIGINT, p_currency TEXT, p_jackpot_bp INT, p_jackpot_shard INT, p_device TEXT
) RETURNS TABLE (outcome TEXT, new_balance BIGINT, cur TEXT)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_balance BIGINT; v_seq BIGINT; v_hash TEXT; v_cur TEXT; v_house TEXT; v_mine TEXT;
    v_pool TEXT; v_share BIGINT; v_limits TEXT;
BEGIN
    -- One round trip for the common bet: conditional debit that extends the hash chain;
    -- anything unusual (unknown player, funds, limits, currency, duplicate) answers SLOW
    -- or raises unique_violation, and the caller takes the general path.
    IF p_jackpot_bp = 0 THEN
        UPDATE players p SET
            balance = p.balance - p_amount,
            seq = p.seq + 1,
            version = p.version + 1,
            last_hash = encode(sha256(convert_to(concat_ws('|',
                p.last_hash, p.player_id, (p.seq + 1)::text, p_tx, 'bet',
                'player:' || p.currency || ':' || p.player_id,
                'house:' || p.currency || ':' || p_shard::text,
                p_amount::text, p.currency, p_round, p_ts::text), 'UTF8')), 'hex')
        WHERE p.player_id = p_player AND p.balance >= p_amount AND p.limits IS NULL
          AND (p_currency IS NULL OR p.currency = p_currency)
        RETURNING p.balance, p.seq, p.last_hash, p.currency
        INTO v_balance, v_seq, v_hash, v_cur;
        IF NOT FOUND THEN
            RETURN QUERY SELECT 'SLOW'::TEXT, NULL::BIGINT, NULL::TEXT;
            RETURN;
        END IF;
        v_house := 'house:' || v_cur || ':' || p_shard::text;
        INSERT INTO txs (transaction_id, kind, player_id, fingerprint, round_id, amount,
                         state, status, balance, currency, ts_us, device)
        VALUES (p_tx, 'bet', p_player, p_fp, p_round, p_amount, 'open', 'ok', v_balance,
                v_cur, p_ts, p_device);
        INSERT INTO journal (stream, seq, transaction_id, kind, debit_account,
                             credit_account, amount, currency, round_id, ts_us, hash)
        VALUES (p_player, v_seq, p_tx, 'bet', 'player:' || v_cur || ':' || p_player,
                v_house, p_amount, v_cur, p_round, p_ts, v_hash);
        -- The house row is shared by many players: lock it last, held only until commit.
        PERFORM wallet_house_credit(v_house, v_cur, p_amount);
        RETURN QUERY SELECT 'OK'::TEXT, v_balance, v_cur;
        RETURN;
    END IF;
    -- A stake with a jackpot share: a house leg and a jackpot leg, chained in that order
    -- (as the planner does), the shared rows locked last: house, then the jackpot pool.
    SELECT p.balance, p.seq, p.last_hash, p.currency, p.limits
    INTO v_balance, v_seq, v_hash, v_cur, v_limits
    FROM players p WHERE p.player_id = p_player FOR UPDATE;
    IF NOT FOUND OR v_balance < p_amount OR v_limits IS NOT NULL
       OR (p_currency IS NOT NULL AND v_cur <> p_currency) THEN
        RETURN QUERY SELECT 'SLOW'::TEXT, NULL::BIGINT, NULL::TEXT;
        RETURN;
    END IF;
    v_share := div(p_amount::NUMERIC * p_jackpot_bp, 10000)::BIGINT;  -- no overflow
    v_balance := v_balance - p_amount;
    v_mine := 'player:' || v_cur || ':' || p_player;
    v_house := 'house:' || v_cur || ':' || p_shard::text;
    v_pool := 'jackpot:' || v_cur || ':' || p_jackpot_shard::text;
    INSERT INTO txs (transaction_id, kind, player_id, fingerprint, round_id, amount, state,
                     status, balance, currency, ts_us, jackpot, device)
    VALUES (p_tx, 'bet', p_player, p_fp, p_round, p_amount, 'open', 'ok', v_balance, v_cur,
            p_ts, v_share, p_device);
    IF p_amount > v_share THEN
        v_seq := v_seq + 1;
        v_hash := encode(sha256(convert_to(concat_ws('|', v_hash, p_player, v_seq::text, p_tx,
            'bet', v_mine, v_house, (p_amount - v_share)::text, v_cur, p_round, p_ts::text),
            'UTF8')), 'hex');
        INSERT INTO journal (stream, seq, transaction_id, kind, debit_account,
                             credit_account, amount, currency, round_id, ts_us, hash)
        VALUES (p_player, v_seq, p_tx, 'bet', v_mine, v_house, p_amount - v_share, v_cur,
                p_round, p_ts, v_hash);
    END IF;
    IF v_share > 0 THEN
        v_seq := v_seq + 1;
        v_hash := encode(sha256(convert_to(concat_ws('|', v_hash, p_player, v_seq::text, p_tx,
            'bet', v_mine, v_pool, v_share::text, v_cur, p_round, p_ts::text), 'UTF8')),
            'hex');
        INSERT INTO journal (stream, seq, transaction_id, kind, debit_account,
                             credit_account, amount, currency, round_id, ts_us, hash)
        VALUES (p_player, v_seq, p_tx, 'bet', v_mine, v_pool, v_share, v_cur, p_round, p_ts,
                v_hash);
    END IF;
    UPDATE players SET balance = v_balance, seq = v_seq, last_hash = v_hash,
                       version = version + 1
    WHERE player_id = p_player;
    IF p_amount > v_share THEN
        PERFORM wallet_house_credit(v_house, v_cur, p_amount - v_share);
    END IF;
    IF v_share > 0 THEN
        PERFORM wallet_house_credit(v_pool, v_cur, v_share);
    END IF;
    RETURN QUERY SELECT 'OK'::TEXT, v_balance, v_cur;
END
$fn$;

CREATE OR REPLACE FUNCTION wallet_win(
    p_tx TEXT, p_player TEXT, p_round TEXT, p_amount BIGINT, p_fp TEXT, p_shard INT,
    p_ts BIGINT, p_currency TEXT
) RETURNS TABLE (outcome TEXT, new_balance BIGINT, cur TEXT)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_balance BIGINT; v_seq BIGINT; v_hash TEXT; v_cur TEXT; v_house TEXT; v_mine TEXT;
BEGIN
    -- One round trip for the common win: the player row locked first (as the general path
    -- does), the round must hold an open bet of the player; anything else (unknown player,
    -- currency, no open bet) answers SLOW, a duplicate id raises unique_violation.
    SELECT p.balance, p.seq, p.last_hash, p.currency INTO v_balance, v_seq, v_hash, v_cur
    FROM players p WHERE p.player_id = p_player FOR UPDATE;
    IF NOT FOUND OR (p_currency IS NOT NULL AND v_cur <> p_currency) OR NOT EXISTS (
        SELECT 1 FROM txs t WHERE t.player_id = p_player AND t.round_id = p_round
                              AND t.state = 'open'
    ) THEN
        RETURN QUERY SELECT 'SLOW'::TEXT, NULL::BIGINT, NULL::TEXT;
        RETURN;
    END IF;
    v_balance := v_balance + p_amount;
    INSERT INTO txs (transaction_id, kind, player_id, fingerprint, round_id, amount, state,
                     status, balance, currency, ts_us)
    VALUES (p_tx, 'win', p_player, p_fp, p_round, p_amount, NULL, 'ok', v_balance, v_cur,
            p_ts);
    UPDATE txs SET state = 'settled'
    WHERE player_id = p_player AND round_id = p_round AND state = 'open';
    IF p_amount = 0 THEN
        UPDATE players SET version = version + 1 WHERE player_id = p_player;
        RETURN QUERY SELECT 'OK'::TEXT, v_balance, v_cur;
        RETURN;
    END IF;
    v_house := 'house:' || v_cur || ':' || p_shard::text;
    v_mine := 'player:' || v_cur || ':' || p_player;
    v_seq := v_seq + 1;
    v_hash := encode(sha256(convert_to(concat_ws('|',
        v_hash, p_player, v_seq::text, p_tx, 'win', v_house, v_mine, p_amount::text, v_cur,
        p_round, p_ts::text), 'UTF8')), 'hex');
    UPDATE players SET balance = v_balance, seq = v_seq, last_hash = v_hash,
                       version = version + 1
    WHERE player_id = p_player;
    INSERT INTO journal (stream, seq, transaction_id, kind, debit_account, credit_account,
                         amount, currency, round_id, ts_us, hash)
    VALUES (p_player, v_seq, p_tx, 'win', v_house, v_mine, p_amount, v_cur, p_round, p_ts,
            v_hash);
    PERFORM wallet_house_credit(v_house, v_cur, -p_amount);
    RETURN QUERY SELECT 'OK'::TEXT, v_balance, v_cur;
END
$fn$;
"""

import type { Migration } from "./types";

// The schema, as numbered steps. Every statement must run unchanged on SQLite,
// PostgreSQL and CockroachDB: ids are TEXT made by the server, times are epoch
// milliseconds in BIGINT, JSON is TEXT, no SERIAL and no dialect-only types.
export const migrations: Migration[] = [
  {
    id: 1,
    name: "initial schema",
    statements: [
      `CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        label TEXT NOT NULL,
        created_at BIGINT NOT NULL
      )`,
      `CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        version INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
      `CREATE TABLE agent_versions (
        agent_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        env TEXT NOT NULL,
        system_prompt TEXT,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (agent_id, version)
      )`,
      `CREATE TABLE agent_files (
        agent_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        path TEXT NOT NULL,
        mode INTEGER NOT NULL,
        content_base64 TEXT NOT NULL,
        PRIMARY KEY (agent_id, version, path)
      )`,
      `CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        agent_id TEXT NOT NULL,
        agent_name TEXT NOT NULL,
        agent_version INTEGER NOT NULL,
        status TEXT NOT NULL,
        sandbox_id TEXT,
        sdk_session_id TEXT,
        model TEXT,
        settings TEXT NOT NULL,
        parent_session_id TEXT,
        created_at BIGINT NOT NULL,
        last_active_at BIGINT NOT NULL
      )`,
      `CREATE INDEX sessions_by_created ON sessions (created_at, id)`,
      `CREATE INDEX sessions_by_agent ON sessions (agent_name, created_at)`,
      `CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        status TEXT NOT NULL,
        server_id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT NOT NULL,
        ended_at BIGINT,
        end_reason TEXT
      )`,
      `CREATE INDEX sandboxes_by_session ON sandboxes (session_id)`,
      `CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at BIGINT NOT NULL
      )`,
      `CREATE INDEX messages_by_session ON messages (session_id, sequence)`,
      `CREATE TABLE events (
        session_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (session_id, seq)
      )`,
      `CREATE TABLE transcripts (
        session_id TEXT NOT NULL,
        sdk_session_id TEXT NOT NULL,
        subpath TEXT NOT NULL,
        idx BIGINT NOT NULL,
        uuid TEXT,
        entry TEXT NOT NULL,
        PRIMARY KEY (session_id, sdk_session_id, subpath, idx)
      )`,
      `CREATE UNIQUE INDEX transcripts_by_uuid ON transcripts (session_id, sdk_session_id, subpath, uuid)`,
    ],
  },
  {
    id: 2,
    name: "model usage and agent settings (budgets, egress)",
    statements: [
      // JSON: {maxTokens?, egress?}; NULL for versions deployed before.
      `ALTER TABLE agent_versions ADD COLUMN settings TEXT`,
      `CREATE TABLE usage_records (
        id TEXT PRIMARY KEY,
        session_id TEXT,
        agent_name TEXT NOT NULL,
        turn_id TEXT,
        key_id TEXT,
        model TEXT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cache_creation_tokens BIGINT NOT NULL,
        cache_read_tokens BIGINT NOT NULL,
        created_at BIGINT NOT NULL
      )`,
      `CREATE INDEX usage_by_created ON usage_records (created_at, id)`,
      `CREATE INDEX usage_by_session ON usage_records (session_id, created_at)`,
      `CREATE INDEX usage_by_agent ON usage_records (agent_name, created_at)`,
    ],
  },
  {
    id: 3,
    name: "checkpoints and the workspace object catalog",
    statements: [
      // The workspace version a session's files were last saved as, rewound or forked to (NULL: none yet,
      // or a snapshot from before versions, kept under the session's own folder).
      `ALTER TABLE sessions ADD COLUMN workspace_version TEXT`,
      // Set when a rewind took the message off the session's line; still listed, marked.
      `ALTER TABLE messages ADD COLUMN rewound_at BIGINT`,
      // One per completed turn: the workspace version and the conversation position after it.
      `CREATE TABLE checkpoints (
        session_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        turn INTEGER NOT NULL,
        parent INTEGER,
        version TEXT NOT NULL,
        sdk_session_id TEXT,
        transcript_uuid TEXT,
        transcript_idx BIGINT,
        message_seq BIGINT NOT NULL,
        event_seq BIGINT NOT NULL,
        file_count BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        files_changed BIGINT NOT NULL,
        bytes_changed BIGINT NOT NULL,
        prompt TEXT,
        rewound_at BIGINT,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (session_id, number)
      )`,
      `CREATE INDEX checkpoints_by_version ON checkpoints (version)`,
      `CREATE INDEX sessions_by_workspace_version ON sessions (workspace_version)`,
      // Which stored objects each version needs; what the garbage collector keeps.
      `CREATE TABLE version_objects (
        version TEXT NOT NULL,
        object_key TEXT NOT NULL,
        PRIMARY KEY (version, object_key)
      )`,
      `CREATE INDEX version_objects_by_key ON version_objects (object_key)`,
      // Every object a save wrote or reused, touched before its bytes are written and again when a
      // version that needs it commits; deleting_at marks one the collector is removing.
      `CREATE TABLE snapshot_objects (
        object_key TEXT PRIMARY KEY,
        touched_at BIGINT NOT NULL,
        deleting_at BIGINT
      )`,
      // Saves in progress on any server (heartbeat kept fresh while they run): the collector leaves
      // every object touched since the oldest one started, however long it takes.
      `CREATE TABLE snapshot_saves (
        id TEXT PRIMARY KEY,
        started_at BIGINT NOT NULL,
        heartbeat_at BIGINT NOT NULL
      )`,
    ],
  },
  {
    id: 4,
    name: "agent config (warm spares)",
    statements: [
      // JSON: choices about the agent that are not part of a version, such as {warmSpares}.
      `ALTER TABLE agents ADD COLUMN config TEXT`,
    ],
  },
  {
    id: 5,
    name: "the work queue and evaluations",
    statements: [
      // Prompts waiting to run, running, or done. A server claims one by a conditional UPDATE
      // (claimed_by, lease_until) and renews the lease while it runs; an expired lease lets any
      // server claim it again. attempts counts claims; next_attempt_at delays a retry.
      `CREATE TABLE queue_items (
        id TEXT PRIMARY KEY,
        agent_name TEXT NOT NULL,
        prompt TEXT NOT NULL,
        continue_session_id TEXT,
        session_id TEXT,
        priority INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        max_retries INTEGER NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        claimed_by TEXT,
        lease_until BIGINT,
        result TEXT,
        error TEXT,
        created_at BIGINT NOT NULL,
        started_at BIGINT,
        completed_at BIGINT
      )`,
      `CREATE INDEX queue_items_ready ON queue_items (status, next_attempt_at)`,
      `CREATE INDEX queue_items_by_created ON queue_items (created_at, id)`,
      // Evaluation cases of an agent; topics, tags and prior turns are JSON arrays.
      `CREATE TABLE eval_cases (
        id TEXT PRIMARY KEY,
        agent_name TEXT NOT NULL,
        question TEXT NOT NULL,
        expected_topics TEXT NOT NULL,
        unexpected_topics TEXT NOT NULL,
        reference_answer TEXT,
        category TEXT,
        tags TEXT NOT NULL,
        history TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
      `CREATE INDEX eval_cases_by_agent ON eval_cases (agent_name, created_at)`,
      `CREATE TABLE eval_runs (
        id TEXT PRIMARY KEY,
        agent_name TEXT NOT NULL,
        agent_version INTEGER NOT NULL,
        status TEXT NOT NULL,
        server_id TEXT NOT NULL,
        grade INTEGER NOT NULL,
        case_count INTEGER NOT NULL,
        error TEXT,
        created_at BIGINT NOT NULL,
        completed_at BIGINT
      )`,
      `CREATE INDEX eval_runs_by_agent ON eval_runs (agent_name, created_at)`,
      // One per case of a run. Scores are JSON (auto checks, the model's grade, the human's).
      `CREATE TABLE eval_results (
        run_id TEXT NOT NULL,
        case_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        question TEXT NOT NULL,
        status TEXT NOT NULL,
        session_id TEXT,
        answer TEXT,
        error TEXT,
        auto TEXT,
        grade TEXT,
        human TEXT,
        started_at BIGINT,
        completed_at BIGINT,
        PRIMARY KEY (run_id, case_id)
      )`,
    ],
  },
  {
    id: 6,
    name: "tenants, scoped API keys, the credentials vault",
    statements: [
      // limits: JSON {requestsPerMinute?, liveSessions?, runningTurns?, tokensPerDay?}; NULL: the server's defaults.
      `CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        label TEXT NOT NULL,
        limits TEXT,
        created_at BIGINT NOT NULL
      )`,
      `ALTER TABLE api_keys ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default'`,
      // One of read, sessions, admin (each includes the ones before) or operator (admin of every tenant).
      `ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'admin'`,
      `ALTER TABLE api_keys ADD COLUMN prefix TEXT`,
      `ALTER TABLE api_keys ADD COLUMN expires_at BIGINT`,
      `ALTER TABLE api_keys ADD COLUMN revoked_at BIGINT`,
      `ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT`,
      `ALTER TABLE api_keys ADD COLUMN limits TEXT`,
      `CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at)`,
      // A model key sealed with AES-256-GCM under a key derived from ASH_CREDENTIAL_KEY (master_key_id
      // says which master key), bound to its id and tenant; never stored or answered in plaintext.
      `CREATE TABLE credentials (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        type TEXT NOT NULL,
        label TEXT NOT NULL,
        variable TEXT,
        sealed TEXT NOT NULL,
        master_key_id TEXT NOT NULL,
        active INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT
      )`,
      `CREATE INDEX credentials_by_tenant ON credentials (tenant_id, created_at)`,
    ],
  },
  {
    id: 7,
    name: "every agent, session, usage record, queued prompt and evaluation belongs to a tenant",
    // Schema changes only: CockroachDB refuses a schema change after a write in one transaction,
    // and new columns are not usable until their transaction commits; the data follows in 8 and 9.
    statements: [
      `ALTER TABLE sessions ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default'`,
      // The key that made the session: its per-key limits count the session.
      `ALTER TABLE sessions ADD COLUMN api_key_id TEXT`,
      `CREATE INDEX sessions_by_tenant ON sessions (tenant_id, created_at)`,
      `ALTER TABLE usage_records ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default'`,
      `ALTER TABLE usage_records ADD COLUMN api_key_id TEXT`,
      `CREATE INDEX usage_by_tenant ON usage_records (tenant_id, created_at)`,
      `ALTER TABLE queue_items ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default'`,
      `ALTER TABLE queue_items ADD COLUMN api_key_id TEXT`,
      `ALTER TABLE eval_cases ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default'`,
      `ALTER TABLE eval_runs ADD COLUMN tenant_id TEXT NOT NULL DEFAULT 'default'`,
      // Agent names are unique per tenant, not server-wide (a name taken elsewhere must not be visible).
      `CREATE TABLE agents_by_tenant (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        config TEXT,
        UNIQUE (tenant_id, name)
      )`,
    ],
  },
  {
    id: 8,
    name: "the default tenant, the operator's keys, agents copied to their tenant table",
    statements: [
      `INSERT INTO tenants (id, label, limits, created_at) VALUES ('default', 'default', NULL, 0) ON CONFLICT DO NOTHING`,
      // The keys so far were the server's one key: the operator's.
      `UPDATE api_keys SET scopes = 'operator'`,
      `INSERT INTO agents_by_tenant (id, tenant_id, name, version, created_at, updated_at, config)
         SELECT id, 'default', name, version, created_at, updated_at, config FROM agents`,
    ],
  },
  {
    id: 9,
    name: "agents keyed by tenant and name",
    statements: [`DROP TABLE agents`, `ALTER TABLE agents_by_tenant RENAME TO agents`],
  },
  {
    id: 10,
    name: "attachments",
    statements: [
      // Files a client attaches to a session (or a message): kept in the database, so every server
      // sharing it serves them; also written into the live workspace under attachments/.
      `CREATE TABLE attachments (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        message_id TEXT,
        filename TEXT NOT NULL,
        mime_type TEXT NOT NULL,
        size BIGINT NOT NULL,
        content_base64 TEXT NOT NULL,
        created_at BIGINT NOT NULL
      )`,
      `CREATE INDEX attachments_by_session ON attachments (session_id, created_at)`,
    ],
  },
  {
    id: 11,
    name: "the Managed Agents API: environments, session titles and metadata, archiving, files in sessions",
    // Schema only; the /v1 API reads and writes the same rows as /api (docs/decisions/managed-agents-api.md).
    statements: [
      // What sessions run in: networking and packages as the API shapes them, and variables (JSON).
      `CREATE TABLE environments (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        config TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        archived_at BIGINT
      )`,
      `CREATE INDEX environments_by_tenant ON environments (tenant_id, created_at)`,
      `ALTER TABLE sessions ADD COLUMN title TEXT`,
      `ALTER TABLE sessions ADD COLUMN metadata TEXT`,
      `ALTER TABLE sessions ADD COLUMN environment_id TEXT`,
      `ALTER TABLE sessions ADD COLUMN archived_at BIGINT`,
      // A deleted session is gone from /v1; its history stays for /api (an ended session).
      `ALTER TABLE sessions ADD COLUMN deleted_at BIGINT`,
      `ALTER TABLE agents ADD COLUMN archived_at BIGINT`,
      // A stored file (an attachment; session_id '' when uploaded on its own) placed in a session's workspace.
      `CREATE TABLE session_resources (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        file_id TEXT NOT NULL,
        mount_path TEXT NOT NULL,
        created_at BIGINT NOT NULL
      )`,
      `CREATE INDEX session_resources_by_session ON session_resources (session_id, created_at)`,
    ],
  },
  {
    id: 12,
    name: "several servers: heartbeats and one lease per live session",
    // docs/decisions/cluster-leases.md
    statements: [
      // Each server's last heartbeat, where it answers, and its load (for placing new sessions).
      `CREATE TABLE servers (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        heartbeat_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        draining INTEGER NOT NULL,
        live_sessions INTEGER NOT NULL,
        capacity INTEGER NOT NULL
      )`,
      // The one server a live session's sandbox and agent run on, until expires_at unless renewed.
      `CREATE TABLE session_leases (
        session_id TEXT PRIMARY KEY,
        server_id TEXT NOT NULL,
        address TEXT NOT NULL,
        acquired_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
      )`,
      `CREATE INDEX session_leases_by_server ON session_leases (server_id)`,
      `CREATE INDEX session_leases_by_expiry ON session_leases (expires_at)`,
    ],
  },
];


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
];

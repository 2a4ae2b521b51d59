/**
 * Evidence of the Pouch audit log, checked in the browser with Web Crypto alone.
 *
 * The same rules as the gateway's Python code, so a page can show an auditor that an
 * entry is in the log without trusting the server that rendered it:
 *
 *  - Merkle tree (gateway/audit/merkle.py, RFC 9162 section 2.1): a leaf hashes as
 *    SHA-256(0x00 || data), a node as SHA-256(0x01 || left || right). The leaf data of
 *    an audit entry is its canonical encoding (AuditEntry.canonical): RFC 8785 JSON of
 *    the v1 fields (gateway/audit/entry.py).
 *  - Signed notes (gateway/audit/note.py, c2sp.org/signed-note): text, a blank line,
 *    then lines "— <key name> <base64(4-byte key ID || signature)>". A key ID is
 *    SHA-256(name || 0x0A || type || public key)[:4] (gateway/pki/note_keys.py).
 *  - Checkpoints (gateway/audit/checkpoint.py, c2sp.org/tlog-checkpoint): origin, tree
 *    size, base64 root hash, optional extension lines.
 *
 * Trust comes only from the vkeys the caller pins (the console renders them from the
 * trust bundle), never from the evidence. A checkpoint is accepted when its origin is
 * the pinned origin, a pinned Ed25519 key (type 0x01) signed it, and every line of a
 * pinned key verifies (a bad line cannot hide behind a good one). Lines of other keys
 * are ignored: the log's ML-DSA-44 cosignature (type 0x06, same key name, another key
 * ID) is one of them, since Web Crypto cannot check it.
 *
 * Every refusal is an EvidenceError whose `check` names the check that failed:
 * "key" (a pinned vkey is unusable), "note" and "checkpoint" (syntax), "origin",
 * "signature", "size", "leaf", "inclusion", "consistency".
 *
 * Usage:
 *
 *   import { openCheckpoint, checkInclusion } from "/static/evidence.js";
 *   const checkpoint = await openCheckpoint(noteText, { origin, vkeys });
 *   await checkInclusion(leafData, index, checkpoint.size, proof, checkpoint.rootHash);
 */

const HASH_SIZE = 32;
const KEY_ID_SIZE = 4;
const SIGNATURE_PREFIX = "\u2014 ";
const MAX_SIGNATURES = 100;
const MAX_NOTE_BYTES = 256 * 1024;
const SIGNATURE_TYPE_ED25519 = 0x01;
const ED25519_PUBLIC_KEY_SIZE = 32;
const ED25519_SIGNATURE_SIZE = 64;
const TREE_SIZE = /^(0|[1-9][0-9]{0,19})$/;
const MAX_TREE_SIZE = 2n ** 64n - 1n;
const HEX_KEY_ID = /^[0-9a-fA-F]{8}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
// What Python's str.isspace() calls a space; a key name holds none.
const SPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u;
const CONTROL_BUT_NEWLINE = /[\x00-\x09\x0b-\x1f]/;
const CONTROL = /[\x00-\x1f]/;

/** The fields of a v1 audit entry (gateway/audit/entry.py AuditEvent, and "v"). */
export const ENTRY_FIELDS_V1 = Object.freeze([
  "v", "time", "event_kind", "decision", "message_id", "agreement_id",
  "agreement_version", "exchange_type", "purpose", "peer_state", "principal",
  "payload_digest", "reason_code", "removed_paths", "transformed_paths",
]);
/** The values of EventKind and Decision in gateway/audit/entry.py. */
export const EVENT_KINDS_V1 = Object.freeze([
  "submitted", "sent", "received", "delivered", "receipted", "refused", "failed",
  "dead_lettered", "case_transition", "agreement_loaded", "agreement_suspended",
  "agreement_resumed", "agreement_terminated", "key_changed", "admin_action",
  "checkpoint_refused",
]);
export const DECISIONS_V1 = Object.freeze([
  "accepted", "refused", "applied", "rejected", "failed", "recorded",
]);
const ENTRY_TOKEN_FIELDS = [
  "message_id", "agreement_id", "exchange_type", "purpose", "principal", "payload_digest",
];
const ENTRY_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z$/;
const ENTRY_TOKEN = /^[\x21-\x7e]{1,200}$/;
const ENTRY_STATE = /^[A-Z]{2}$/;
const ENTRY_CODE = /^[A-Z][A-Z0-9_]{0,127}$/;
const ENTRY_PATH = /^[a-z0-9_]+(\[\])?(\.[a-z0-9_]+(\[\])?)*$/;

/** A failed check of the evidence; `check` says which. */
export class EvidenceError extends Error {
  constructor(check, message) {
    super(message);
    this.name = "EvidenceError";
    this.check = check;
  }
}

function fail(check, message) {
  throw new EvidenceError(check, message);
}

/** Standard padded base64, canonical only (one value, one spelling), else null. */
export function decodeBase64(text) {
  if (typeof text !== "string" || !BASE64.test(text)) {
    return null;
  }
  const binary = atob(text);
  const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
  return encodeBase64(bytes) === text ? bytes : null;
}

export function encodeBase64(bytes) {
  let binary = "";
  for (const byte of bytes) {
    binary += String.fromCharCode(byte);
  }
  return btoa(binary);
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function equalBytes(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export function leafHash(data) {
  return sha256(concat(Uint8Array.of(0x00), data));
}

export function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(0x01), left, right));
}

/** SHA-256(name || 0x0A || type || public key)[:4], big-endian, as an unsigned number. */
export async function noteKeyId(keyName, signatureType, publicKey) {
  const name = new TextEncoder().encode(keyName);
  const digest = await sha256(concat(name, Uint8Array.of(0x0a, signatureType), publicKey));
  return new DataView(digest.buffer).getUint32(0);
}

function isNoteText(text) {
  return !CONTROL_BUT_NEWLINE.test(text) && text.isWellFormed();
}

function isKeyName(name) {
  return name.length > 0 && !name.includes("+") && !SPACE.test(name) && isNoteText(name);
}

/** A vkey "<name>+<8 hex key ID>+<base64(type || public key)>"; its key ID must match. */
export async function parseVkey(vkey) {
  if (typeof vkey !== "string") {
    fail("key", "a verifier key is text");
  }
  const [keyName, keyIdHex] = vkey.split("+", 2);
  const material = vkey.split("+").slice(2).join("+");
  if (!isKeyName(keyName) || !HEX_KEY_ID.test(keyIdHex ?? "")) {
    fail("key", "a verifier key is <name>+<8 hex digits>+<base64>");
  }
  const raw = decodeBase64(material);
  if (raw === null || raw.length < 2) {
    fail("key", `verifier key ${keyName}: not a type byte and a key in canonical base64`);
  }
  const key = { keyName, signatureType: raw[0], publicKey: raw.slice(1), keyId: 0 };
  key.keyId = await noteKeyId(keyName, key.signatureType, key.publicKey);
  if (key.keyId !== parseInt(keyIdHex, 16)) {
    fail("key", `verifier key ${keyName}: key ID does not match the key`);
  }
  return key;
}

function parseSignatureLine(line) {
  if (!line.startsWith(SIGNATURE_PREFIX)) {
    fail("note", "a note signature line starts with an em dash and a space");
  }
  const rest = line.slice(SIGNATURE_PREFIX.length);
  const space = rest.indexOf(" ");
  const keyName = space < 0 ? rest : rest.slice(0, space);
  if (!isKeyName(keyName)) {
    fail("note", "a note signature names its key without spaces or '+'");
  }
  const raw = space < 0 ? null : decodeBase64(rest.slice(space + 1));
  if (raw === null) {
    fail("note", `note signature by ${keyName} is not canonical base64`);
  }
  if (raw.length <= KEY_ID_SIZE) {
    fail("note", `note signature by ${keyName} is too short`);
  }
  const keyId = new DataView(raw.buffer).getUint32(0);
  return { keyName, keyId, signature: raw.slice(KEY_ID_SIZE) };
}

/** Split a signed note into its text and signature lines; checks syntax, trusts nothing. */
export function parseNote(data) {
  if (typeof data !== "string") {
    fail("note", "a signed note is text");
  }
  if (!isNoteText(data)) {
    fail("note", "a signed note is UTF-8 without control characters other than newline");
  }
  if (new TextEncoder().encode(data).length > MAX_NOTE_BYTES) {
    fail("note", `a signed note is at most ${MAX_NOTE_BYTES} bytes`);
  }
  const split = data.lastIndexOf("\n\n");
  if (split < 0) {
    fail("note", "a signed note separates its text from its signatures by a blank line");
  }
  const text = data.slice(0, split + 1);
  const block = data.slice(split + 2);
  if (!block.endsWith("\n")) {
    fail("note", "a signed note ends with a newline-terminated signature line");
  }
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) {
    fail("note", `a signed note carries at most ${MAX_SIGNATURES} signatures`);
  }
  return { text, signatures: lines.map(parseSignatureLine) };
}

/** A checkpoint body: origin, size, root hash, extension lines. Syntax only. */
export function parseCheckpoint(body) {
  if (!body.endsWith("\n")) {
    fail("checkpoint", "a checkpoint body ends with a newline");
  }
  const lines = body.slice(0, -1).split("\n");
  if (lines.length < 3) {
    fail("checkpoint", "a checkpoint body has origin, size and root hash lines");
  }
  const [origin, size, root, ...extensions] = lines;
  if (!origin || CONTROL.test(origin) || extensions.some((l) => !l || CONTROL.test(l))) {
    fail("checkpoint", "checkpoint origin and extension lines are non-empty lines");
  }
  if (!TREE_SIZE.test(size) || BigInt(size) > MAX_TREE_SIZE) {
    fail("checkpoint", "checkpoint tree size is decimal without leading zeroes");
  }
  if (BigInt(size) > BigInt(Number.MAX_SAFE_INTEGER)) {
    fail("checkpoint", "checkpoint tree size is beyond what a page can check");
  }
  const rootHash = decodeBase64(root);
  if (rootHash === null || rootHash.length !== HASH_SIZE) {
    fail("checkpoint", "checkpoint root hash is 32 bytes in canonical base64");
  }
  return { origin, size: Number(size), rootHash, extensions };
}

async function ed25519Keys(vkeys) {
  if (!Array.isArray(vkeys)) {
    fail("key", "the pinned log keys are a list of vkeys");
  }
  const keys = [];
  for (const vkey of vkeys) {
    const key = await parseVkey(vkey);
    // The log's ML-DSA-44 vkey may be pinned beside it; Web Crypto cannot use it.
    if (key.signatureType !== SIGNATURE_TYPE_ED25519) {
      continue;
    }
    if (key.publicKey.length !== ED25519_PUBLIC_KEY_SIZE) {
      fail("key", `verifier key ${key.keyName}: an Ed25519 public key is 32 bytes`);
    }
    key.cryptoKey = await crypto.subtle.importKey(
      "raw", key.publicKey, { name: "Ed25519" }, false, ["verify"],
    );
    keys.push(key);
  }
  if (keys.length === 0) {
    fail("key", "no Ed25519 (type 0x01) log key is pinned");
  }
  return keys;
}

/**
 * The signature lines of `note` by the pinned Ed25519 `vkeys`, each verified.
 * Lines of other keys are ignored; one bad line of a pinned key refuses the note.
 */
export async function verifyNoteSignature(note, vkeys) {
  const keys = await ed25519Keys(vkeys);
  const text = new TextEncoder().encode(note.text);
  const verified = [];
  for (const line of note.signatures) {
    const key = keys.find((k) => k.keyName === line.keyName && k.keyId === line.keyId);
    if (key === undefined) {
      continue;
    }
    const good = line.signature.length === ED25519_SIGNATURE_SIZE
      && await crypto.subtle.verify({ name: "Ed25519" }, key.cryptoKey, line.signature, text);
    if (!good) {
      fail("signature", `signature by log key ${key.keyName} does not verify`);
    }
    verified.push(line);
  }
  if (verified.length === 0) {
    fail("signature", "the checkpoint carries no signature by a pinned log key");
  }
  return verified;
}

/**
 * The checkpoint of a signed note of the log `origin`, signed by a pinned key.
 * Checked in the order of gateway/audit/verify.py: syntax, origin, signature.
 */
export async function openCheckpoint(noteText, { origin, vkeys }) {
  const checkpoint = parseSignedCheckpoint(noteText);
  if (checkpoint.origin !== origin) {
    fail("origin", `checkpoint of origin ${checkpoint.origin} where ${origin} was expected`);
  }
  await verifyNoteSignature(checkpoint, vkeys);
  return checkpoint;
}

/**
 * A signed checkpoint note read but not trusted: {text, signatures, origin, size,
 * rootHash, extensions}. Only openCheckpoint's answer may be acted on.
 */
export function parseSignedCheckpoint(noteText) {
  const note = parseNote(noteText);
  return { ...note, ...parseCheckpoint(note.text) };
}

function validEntryTime(text) {
  const match = typeof text === "string" ? ENTRY_TIME.exec(text) : null;
  if (match === null) {
    return false;
  }
  const [year, month, day, hour, minute, second] = match.slice(1).map(Number);
  const moment = new Date(0);
  // setUTCFullYear, unlike Date.UTC, does not read years 0 to 99 as 1900 to 1999.
  moment.setUTCFullYear(year, month - 1, day);
  moment.setUTCHours(hour, minute, second);
  return year >= 1 && moment.getUTCFullYear() === year && moment.getUTCMonth() === month - 1
    && moment.getUTCDate() === day && moment.getUTCHours() === hour
    && moment.getUTCMinutes() === minute && moment.getUTCSeconds() === second;
}

function entryProblem(document) {
  const keys = Object.keys(document);
  if (keys.length !== ENTRY_FIELDS_V1.length || !ENTRY_FIELDS_V1.every((f) => keys.includes(f))) {
    return "its fields are not those of a v1 entry";
  }
  if (document.v !== 1) {
    return "it is not encoding version 1";
  }
  if (!validEntryTime(document.time)) {
    return "its time is not YYYY-MM-DDTHH:MM:SS.mmmZ";
  }
  if (!EVENT_KINDS_V1.includes(document.event_kind) || !DECISIONS_V1.includes(document.decision)) {
    return "its event kind or decision is unknown";
  }
  const optional = (name, pattern) => document[name] === null
    || (typeof document[name] === "string" && pattern.test(document[name]));
  if (!ENTRY_TOKEN_FIELDS.every((name) => optional(name, ENTRY_TOKEN))
    || !optional("peer_state", ENTRY_STATE) || !optional("reason_code", ENTRY_CODE)) {
    return "a field breaks its rule";
  }
  const version = document.agreement_version;
  if (version !== null && !Number.isSafeInteger(version)) {
    return "its agreement version is neither a safe integer nor null";
  }
  for (const name of ["removed_paths", "transformed_paths"]) {
    const paths = document[name];
    if (!Array.isArray(paths) || !paths.every((p) => typeof p === "string" && ENTRY_PATH.test(p))
      || paths.some((p, i) => i > 0 && paths[i - 1] > p)) {
      return `its ${name} is not a sorted list of field paths`;
    }
  }
  return null;
}

/** `data` is the canonical encoding of a v1 audit entry (RFC 8785 JSON), else "leaf". */
export function checkEntryLeaf(data) {
  let document;
  try {
    document = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(data));
  } catch {
    fail("leaf", "the leaf is not UTF-8 JSON");
  }
  if (typeof document !== "object" || document === null || Array.isArray(document)) {
    fail("leaf", "the leaf is not a JSON object");
  }
  const problem = entryProblem(document);
  if (problem !== null) {
    fail("leaf", `the leaf is not a v1 audit entry: ${problem}`);
  }
  // Every value is now an ASCII token, a safe integer, null or a list of tokens: for
  // these RFC 8785 is JSON with sorted keys and no spaces. A duplicate key, an escape
  // or a space in the leaf makes it differ.
  const canonical = JSON.stringify(document, [...ENTRY_FIELDS_V1].sort());
  if (!equalBytes(new TextEncoder().encode(canonical), data)) {
    fail("leaf", "the leaf is not the RFC 8785 encoding of its v1 fields");
  }
  return document;
}

function hashesOk(...hashes) {
  return hashes.every((h) => h instanceof Uint8Array && h.length === HASH_SIZE);
}

function treeIndexes(...values) {
  return values.every((v) => Number.isSafeInteger(v) && v >= 0) ? values.map(BigInt) : null;
}

/** RFC 9162 section 2.1.3.2: `proof` shows leaf hash `leaf` at `index` under `root`. */
export async function verifyInclusion(leaf, index, size, proof, root) {
  const bounds = treeIndexes(index, size);
  if (bounds === null || !Array.isArray(proof) || !hashesOk(leaf, root, ...proof)) {
    return false;
  }
  let [fn, sn] = bounds;
  if (fn >= sn) {
    return false;
  }
  sn -= 1n;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) {
      return false;
    }
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n && equalBytes(r, root);
}

/** RFC 9162 section 2.1.4.2: `proof` shows the tree (size1, root1) a prefix of (size2, root2). */
export async function verifyConsistency(size1, size2, proof, root1, root2) {
  const sizes = treeIndexes(size1, size2);
  if (sizes === null || !Array.isArray(proof) || !hashesOk(root1, root2, ...proof)) {
    return false;
  }
  const [m, n] = sizes;
  if (m > n) {
    return false;
  }
  if (m === n) {
    return proof.length === 0 && equalBytes(root1, root2);
  }
  if (m === 0n) {
    return proof.length === 0;
  }
  if (proof.length === 0) {
    return false;
  }
  const path = (m & (m - 1n)) === 0n ? [root1, ...proof] : [...proof];
  let fn = m - 1n;
  let sn = n - 1n;
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0n) {
      return false;
    }
    if ((fn & 1n) === 1n || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return equalBytes(fr, root1) && equalBytes(sr, root2) && sn === 0n;
}

/** A proof as JSON carries it: a list of canonical base64 SHA-256 hashes, else null. */
export function decodeProof(hashes) {
  if (!Array.isArray(hashes)) {
    return null;
  }
  const decoded = hashes.map(decodeBase64);
  return decoded.every((h) => h !== null && h.length === HASH_SIZE) ? decoded : null;
}

/** The leaf `leafData` is at `index` in the tree (`size`, `root`), else "inclusion". */
export async function checkInclusion(leafData, index, size, proof, root) {
  if (!(await verifyInclusion(await leafHash(leafData), index, size, proof, root))) {
    fail("inclusion", `the inclusion proof of entry ${index} does not reproduce the root`);
  }
}

/** The tree (size1, root1) is a prefix of (size2, root2), else "consistency". */
export async function checkConsistency(size1, size2, proof, root1, root2) {
  if (!(await verifyConsistency(size1, size2, proof, root1, root2))) {
    fail("consistency", `the consistency proof from ${size1} to ${size2} does not verify`);
  }
}

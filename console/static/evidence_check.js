/**
 * The console page's in-browser check of an audit entry's evidence (evidence.js).
 *
 * Loaded as <script type="module" src="/static/evidence_check.js"></script>; no inline
 * script, so it runs under the console's CSP (script-src 'self', connect-src 'self').
 * Every word a user sees comes from the page's data-text-* attributes, so the server
 * translates them; this file writes only those words and numbers, always as text.
 *
 * Contract with the page
 * ----------------------
 * Inclusion of the entry, checked on load:
 *
 *   <section id="evidence-check"
 *       data-proof-url="URL"                   same origin; answers the JSON below
 *       data-log-vkeys='["<vkey>", ...]'      the log's pinned vkeys, from the trust
 *                                             bundle (Ed25519 ones are used; others,
 *                                             such as the ML-DSA-44 one, are skipped)
 *       data-log-origin="<origin line>"       e.g. pouch.gateway/FR/audit
 *       data-text-checking="..."              shown while checking
 *       data-text-verified="..."              with placeholders for the tree size, the
 *                                             root hash's first 16 base64 characters
 *                                             and the entry's index: {size} {root}
 *                                             {index}, or %(size)s %(root)s %(index)s
 *       data-text-failed="..."                with {reason} or %(reason)s where the
 *                                             reason goes (else it follows, after a space)
 *       data-text-reason-signature="..."      no valid signature by a pinned key
 *       data-text-reason-inclusion="..."      the proof does not reproduce the root
 *       data-text-reason-origin="..."         the checkpoint is of another log
 *       data-text-reason-leaf="..."           the leaf is not a canonical v1 entry
 *       data-text-reason-size="..."           tree_size is not the checkpoint's size
 *       data-text-reason-malformed="..."      the checkpoint note or the JSON is malformed
 *       data-text-reason-network="..."        the proof could not be fetched or read
 *       data-text-reason-unsupported="..."    no Web Crypto Ed25519 (or no secure context)
 *       data-text-reason-key="...">           optional: the pinned keys are unusable (a
 *                                             fault of the page; else "malformed" is shown)
 *     <p id="evidence-result" role="status" aria-live="polite"></p>
 *   </section>
 *
 *   GET data-proof-url (credentials same-origin) answers
 *   {"index": int, "tree_size": int, "leaf": "<base64 of the entry's canonical bytes>",
 *    "hashes": ["<base64 32-byte hash>", ...], "checkpoint": "<signed checkpoint note>"}
 *
 *   Checked in this order: the note's syntax, its origin is data-log-origin, a pinned
 *   Ed25519 key signed it (every line of a pinned key verifies; lines of other keys,
 *   such as the log's ML-DSA-44 cosignature, are ignored), its tree size is tree_size,
 *   the leaf is a canonical v1 entry, the proof puts the leaf at index under the note's
 *   root. The section's data-state is "checking", then "verified" or "failed".
 *
 * Consistency of two checkpoints, optional, checked on submit:
 *
 *   <form id="consistency-check" data-consistency-url="URL"
 *       data-log-vkeys='[...]' data-log-origin="..."   optional: default to those of
 *                                                      #evidence-check
 *       data-text-checking, data-text-failed and data-text-reason-* as above (signature,
 *       origin, size, malformed, network, unsupported, key), and
 *       data-text-verified="..."             placeholders {first} {second} {root} (or
 *                                            %(first)s ...): the two sizes and the
 *                                            second root's first 16 base64 characters
 *       data-text-reason-consistency="..."   the proof does not join the two roots
 *       data-text-reason-request="...">      optional: the sizes are not 0 <= first <=
 *                                            second (else "malformed" is shown)
 *     <input type="number" name="first"> <input type="number" name="second">
 *     <button type="submit">...</button>
 *   </form>
 *   <p id="consistency-result" role="status" aria-live="polite"></p>   (anywhere)
 *
 *   GET URL?first=A&second=B (credentials same-origin) answers
 *   {"first_size": int, "second_size": int, "first_checkpoint": "<note>",
 *    "second_checkpoint": "<note>", "hashes": ["<base64 32-byte hash>", ...]}
 *   Both notes are opened as above; their sizes must be first_size = A and
 *   second_size = B; the proof must show the first tree a prefix of the second.
 *   The form's data-state is "checking", then "verified" or "failed".
 */

import {
  EvidenceError,
  checkConsistency,
  checkEntryLeaf,
  checkInclusion,
  decodeBase64,
  decodeProof,
  encodeBase64,
  openCheckpoint,
} from "./evidence.js";

const ROOT_PREFIX = 16;

class FetchFailed extends Error {}

// Both the server's gettext style, %(name)s, and {name} are filled.
const PLACEHOLDER = /%\((\w+)\)s|\{(\w+)\}/g;

function fill(template, values) {
  return template.replace(PLACEHOLDER, (whole, gettextName, braceName) => {
    const name = gettextName ?? braceName;
    return Object.hasOwn(values, name) ? String(values[name]) : whole;
  });
}

function hasPlaceholder(template, name) {
  return [...template.matchAll(PLACEHOLDER)].some((m) => (m[1] ?? m[2]) === name);
}

function reasonOf(error) {
  if (!globalThis.crypto?.subtle) {
    // Web Crypto exists in secure contexts only (HTTPS, or the loopback address).
    return "unsupported";
  }
  if (error instanceof EvidenceError) {
    // To the reader a note that is not a signed note is a malformed checkpoint.
    return ["note", "checkpoint"].includes(error.check) ? "malformed" : error.check;
  }
  if (error instanceof FetchFailed) {
    return "network";
  }
  if (error instanceof DOMException && error.name === "NotSupportedError") {
    return "unsupported";
  }
  return null;
}

function show(holder, output, state, text) {
  holder.dataset.state = state;
  output.textContent = text;
}

// Reasons that are the page's own fault may go untranslated: then "malformed" is shown.
const FALLBACK_REASON = { key: "malformed", request: "malformed" };

function reasonText(holder, reason) {
  for (const name of [reason, FALLBACK_REASON[reason]]) {
    const text = name && holder.dataset[`textReason${name[0].toUpperCase()}${name.slice(1)}`];
    if (text !== undefined) {
      return text;
    }
  }
  return "";
}

function showFailure(holder, output, error) {
  const reason = reasonOf(error);
  if (reason === null) {
    // A bug of this page, not a verdict on the evidence; still fail closed.
    console.error("evidence check:", error);
  }
  const failed = holder.dataset.textFailed ?? "";
  const why = reason === null ? "" : reasonText(holder, reason);
  const text = hasPlaceholder(failed, "reason")
    ? fill(failed, { reason: why })
    : [failed, why].filter(Boolean).join(" ");
  show(holder, output, "failed", text);
}

function trustedKeys(holder) {
  const fallback = document.getElementById("evidence-check");
  const vkeysText = holder.dataset.logVkeys ?? fallback?.dataset.logVkeys;
  const origin = holder.dataset.logOrigin ?? fallback?.dataset.logOrigin;
  let vkeys;
  try {
    vkeys = JSON.parse(vkeysText ?? "null");
  } catch {
    vkeys = null;
  }
  if (!Array.isArray(vkeys) || typeof origin !== "string") {
    throw new EvidenceError("key", "the page pins no log keys or origin");
  }
  return { vkeys, origin };
}

async function fetchJson(address, query = {}) {
  const url = new URL(address, document.baseURI);
  if (url.origin !== location.origin) {
    throw new FetchFailed("evidence is fetched from the console's own origin only");
  }
  for (const [name, value] of Object.entries(query)) {
    url.searchParams.set(name, value);
  }
  let response;
  try {
    response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      redirect: "error",
    });
  } catch (error) {
    throw new FetchFailed(`fetching the evidence failed: ${error}`);
  }
  if (!response.ok) {
    throw new FetchFailed(`the evidence answered HTTP ${response.status}`);
  }
  try {
    const body = await response.json();
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      throw new Error("not a JSON object");
    }
    return body;
  } catch (error) {
    throw new FetchFailed(`the evidence is not a JSON object: ${error}`);
  }
}

function requireSize(value, expected, what) {
  if (!Number.isSafeInteger(value) || value < 0 || value !== expected) {
    throw new EvidenceError("size", `${what} is not the checkpoint's tree size ${expected}`);
  }
}

function proofOf(hashes) {
  const proof = decodeProof(hashes);
  if (proof === null) {
    throw new EvidenceError("malformed", "the proof is not a list of base64 SHA-256 hashes");
  }
  return proof;
}

async function checkEntry(section) {
  const keys = trustedKeys(section);
  const evidence = await fetchJson(section.dataset.proofUrl ?? "");
  const checkpoint = await openCheckpoint(evidence.checkpoint, keys);
  requireSize(evidence.tree_size, checkpoint.size, "the proof's tree size");
  const leaf = decodeBase64(evidence.leaf);
  if (leaf === null) {
    throw new EvidenceError("leaf", "the leaf is not canonical base64");
  }
  checkEntryLeaf(leaf);
  const { index } = evidence;
  await checkInclusion(leaf, index, checkpoint.size, proofOf(evidence.hashes),
    checkpoint.rootHash);
  return { index, size: checkpoint.size, root: encodeBase64(checkpoint.rootHash) };
}

async function runEntryCheck(section) {
  const output = section.querySelector("#evidence-result");
  if (output === null) {
    return;
  }
  show(section, output, "checking", section.dataset.textChecking ?? "");
  try {
    const { index, size, root } = await checkEntry(section);
    show(section, output, "verified", fill(section.dataset.textVerified ?? "", {
      index, size, root: `${root.slice(0, ROOT_PREFIX)}…`,
    }));
  } catch (error) {
    showFailure(section, output, error);
  }
}

function requestedSizes(form) {
  const sizes = ["first", "second"].map((name) => {
    const text = String(form.elements.namedItem(name)?.value ?? "").trim();
    return /^(0|[1-9][0-9]{0,15})$/.test(text) ? Number(text) : NaN;
  });
  const [first, second] = sizes;
  if (!sizes.every(Number.isSafeInteger) || first > second) {
    throw new EvidenceError("request", "the sizes are not 0 <= first <= second");
  }
  return { first, second };
}

async function checkTwoCheckpoints(form) {
  const { first, second } = requestedSizes(form);
  const keys = trustedKeys(form);
  const evidence = await fetchJson(form.dataset.consistencyUrl ?? "", {
    first: String(first), second: String(second),
  });
  const older = await openCheckpoint(evidence.first_checkpoint, keys);
  const newer = await openCheckpoint(evidence.second_checkpoint, keys);
  requireSize(evidence.first_size, older.size, "the first size");
  requireSize(evidence.second_size, newer.size, "the second size");
  requireSize(first, older.size, "the first size asked for");
  requireSize(second, newer.size, "the second size asked for");
  await checkConsistency(older.size, newer.size, proofOf(evidence.hashes),
    older.rootHash, newer.rootHash);
  return { first, second, root: encodeBase64(newer.rootHash) };
}

async function runConsistencyCheck(form, output) {
  show(form, output, "checking", form.dataset.textChecking ?? "");
  try {
    const { first, second, root } = await checkTwoCheckpoints(form);
    show(form, output, "verified", fill(form.dataset.textVerified ?? "", {
      first, second, root: `${root.slice(0, ROOT_PREFIX)}…`,
    }));
  } catch (error) {
    showFailure(form, output, error);
  }
}

const section = document.getElementById("evidence-check");
if (section !== null) {
  runEntryCheck(section);
}

const form = document.getElementById("consistency-check");
const formOutput = document.getElementById("consistency-result");
if (form !== null && formOutput !== null) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    runConsistencyCheck(form, formOutput);
  });
}

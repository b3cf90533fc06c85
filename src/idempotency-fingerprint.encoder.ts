// The bytes a fingerprint is the SHA-256 of: a compact binary form of the request in which
// every value carries its type and length, so two different requests never encode alike, and
// JSON objects list their keys sorted, so key order and whitespace never matter. It costs less
// than JSON.parse of the same body (bench/fingerprint.ts): one walk without recursion (any
// depth the parser accepts), no number or string formatting, one reused buffer hashed in
// 64 kB chunks, and no allocation per node (an object's sorted keys are cached by shape).
import { createHash, hash, type Hash } from 'node:crypto';

const CHUNK = 64 * 1024;
/** Room past CHUNK for one short write: a 64-char string in UTF-8 plus its header. */
const SLACK = 256;
const SHORT_STRING = 64;

/** Every value starts with its tag; lengths and integers follow as LEB128 varints. */
const enum Tag {
  Null = 0,
  False = 1,
  True = 2,
  /** A number other than a 32-bit integer: float64, little-endian. */
  Number = 3,
  /** A well-formed string: its UTF-8 byte count, then the bytes. */
  Utf8 = 4,
  /** A string with a lone surrogate: its UTF-16 length, then UTF-16LE code units. */
  Utf16 = 5,
  Array = 6,
  Object = 7,
  Bytes = 8,
  /** A 32-bit integer other than -0: zigzag varint (1.0 and 1 are one number). */
  Integer = 9,
}

/** Why a value is not a JSON tree (a parser produced a Date, a function, a cycle...). */
export class NotJsonError extends Error {}

const objectPrototype = Object.prototype;

/** Sorted key lists of the last few object shapes seen: arrays of records share them. */
const SHAPES = 8;
const NO_KEYS: string[] = [];

export class FingerprintEncoder {
  private readonly buffer = Buffer.alloc(CHUNK + SLACK);
  private readonly view = new DataView(this.buffer.buffer, this.buffer.byteOffset, CHUNK + SLACK);
  private position = 0;
  private hasher: Hash | undefined;
  private readonly shapeKeys: (string[] | undefined)[] = new Array(SHAPES).fill(undefined);
  private readonly shapeSorted: (string[] | undefined)[] = new Array(SHAPES).fill(undefined);
  private nextShape = 0;
  // The walk's explicit stack, reused between calls.
  private readonly containers: (object | undefined)[] = [];
  private readonly keyLists: (string[] | undefined)[] = [];
  private readonly indexes: number[] = [];
  private readonly keyScratch: string[] = [];

  reset(): void {
    this.position = 0;
    this.hasher = undefined;
  }

  digest(): Buffer {
    if (this.hasher === undefined) {
      return hash('sha256', this.buffer.subarray(0, this.position), 'buffer');
    }
    this.flush();
    const digest = this.hasher.digest();
    this.hasher = undefined;
    return digest;
  }

  tag(tag: number): void {
    if (this.position > CHUNK) this.flush();
    this.buffer[this.position++] = tag;
  }

  /** A byte string: its length, then the bytes (large ones go to the hash uncopied). */
  bytes(bytes: Uint8Array): void {
    this.header(Tag.Bytes, bytes.length);
    if (bytes.length <= SLACK) {
      if (this.position > CHUNK) this.flush();
      this.buffer.set(bytes, this.position);
      this.position += bytes.length;
      return;
    }
    this.flush();
    this.hasher!.update(bytes);
  }

  number(value: number): void {
    if (this.position > CHUNK) this.flush();
    const b = this.buffer;
    let p = this.position;
    // Integers of 32 bits (not -0) take a zigzag varint, every other number its float64.
    if ((value | 0) === value && (value !== 0 || 1 / value > 0)) {
      let zigzag = ((value << 1) ^ (value >> 31)) >>> 0;
      b[p++] = Tag.Integer;
      while (zigzag > 0x7f) {
        b[p++] = (zigzag & 0x7f) | 0x80;
        zigzag >>>= 7;
      }
      b[p++] = zigzag;
      this.position = p;
      return;
    }
    b[p] = Tag.Number;
    // One bit pattern for NaN, which no JSON parser produces but another parser might.
    this.view.setFloat64(p + 1, value === value ? value : NaN, true);
    this.position = p + 9;
  }

  string(value: string): void {
    const length = value.length;
    if (length > SHORT_STRING) return this.longString(value);
    if (this.position > CHUNK) this.flush();
    // Short strings (keys, most values) are written as UTF-8 here: a native call costs more.
    const b = this.buffer;
    const start = this.position;
    let p = start + 2;
    for (let i = 0; i < length; i++) {
      const c = value.charCodeAt(i);
      if (c < 0x80) {
        b[p++] = c;
      } else if (c < 0x800) {
        b[p++] = 0xc0 | (c >> 6);
        b[p++] = 0x80 | (c & 0x3f);
      } else if (c < 0xd800 || c > 0xdfff) {
        b[p++] = 0xe0 | (c >> 12);
        b[p++] = 0x80 | ((c >> 6) & 0x3f);
        b[p++] = 0x80 | (c & 0x3f);
      } else {
        return this.longString(value); // a surrogate: pairs and lone ones are decided there
      }
    }
    const n = p - start - 2;
    b[start] = Tag.Utf8;
    if (n < 0x80) {
      b[start + 1] = n;
      this.position = p;
    } else {
      // Past 127 bytes (non-ASCII only) the length takes two bytes: move the text by one.
      b.copyWithin(start + 3, start + 2, p);
      b[start + 1] = (n & 0x7f) | 0x80;
      b[start + 2] = n >>> 7;
      this.position = p + 1;
    }
  }

  /**
   * Any JSON value: null, booleans, numbers (their 64-bit value: `1.0` and `1` are alike),
   * strings, arrays in order and objects with their keys in UTF-16 code unit order. Throws
   * NotJsonError for anything else, and after `maxNodes` values (a DAG or a cycle from a
   * parser that is not JSON.parse would never end otherwise).
   */
  json(root: unknown, maxNodes: number): void {
    if (typeof root !== 'object' || root === null) return this.primitive(root);
    const containers = this.containers;
    const keyLists = this.keyLists;
    const indexes = this.indexes;
    let container: object = root;
    let keys = this.open(root);
    let nodes = 1 + (keys === undefined ? (root as unknown[]).length : keys.length);
    let index = 0;
    let depth = 0;
    // Brent's cycle check: a container met again on the path, compared with the one at the
    // last power-of-two depth. A cycle (a parser's, never JSON's) would otherwise descend
    // forever; one comparison per level costs nothing at depths JSON.parse reaches.
    let mark: object | undefined;
    let markDepth = 0;
    try {
      for (;;) {
        let child: unknown;
        let descend = false;
        if (keys === undefined) {
          const array = container as unknown[];
          while (index < array.length) {
            child = array[index++];
            if (typeof child === 'object' && child !== null) {
              descend = true;
              break;
            }
            this.primitive(child);
          }
        } else {
          const object = container as Record<string, unknown>;
          while (index < keys.length) {
            const key = keys[index++];
            this.string(key);
            child = object[key];
            if (typeof child === 'object' && child !== null) {
              descend = true;
              break;
            }
            this.primitive(child);
          }
        }
        if (descend) {
          const next = child as object;
          containers[depth] = container;
          keyLists[depth] = keys;
          indexes[depth] = index;
          depth++;
          if (next === mark) throw new NotJsonError('a cycle');
          if ((depth & (depth - 1)) === 0) {
            mark = next;
            markDepth = depth;
          }
          container = next;
          keys = this.open(next);
          nodes += keys === undefined ? (next as unknown[]).length : keys.length;
          if (nodes > maxNodes) throw new NotJsonError(`more than ${maxNodes} values`);
          index = 0;
          continue;
        }
        if (depth === 0) return;
        depth--;
        if (depth < markDepth) mark = undefined;
        container = containers[depth]!;
        keys = keyLists[depth];
        index = indexes[depth];
        // Let the body be collected once encoded: the stack outlives this call.
        containers[depth] = undefined;
        keyLists[depth] = undefined;
      }
    } catch (error) {
      containers.fill(undefined, 0, depth);
      keyLists.fill(undefined, 0, depth);
      throw error;
    }
  }

  private primitive(value: unknown): void {
    switch (typeof value) {
      case 'string':
        return this.string(value);
      case 'number':
        return this.number(value);
      case 'boolean':
        return this.tag(value ? Tag.True : Tag.False);
      default:
        if (value === null) return this.tag(Tag.Null);
        throw new NotJsonError(`a value of type ${typeof value}`);
    }
  }

  /** Writes an array's or object's header; returns the object's keys in canonical order. */
  private open(value: object): string[] | undefined {
    if (Array.isArray(value)) {
      this.header(Tag.Array, value.length);
      return undefined;
    }
    const prototype = Object.getPrototypeOf(value);
    if (prototype !== objectPrototype && prototype !== null && !isBare(prototype)) {
      throw new NotJsonError(`an instance of ${prototype.constructor?.name ?? 'a class'}`);
    }
    const keys = this.sortedKeys(value);
    this.header(Tag.Object, keys.length);
    return keys;
  }

  /**
   * The object's keys in canonical order, without allocating for a shape seen lately. for-in
   * also lists inherited keys, but open() only admits prototypes that add none.
   */
  private sortedKeys(value: object): string[] {
    const scratch = this.keyScratch;
    let count = 0;
    for (const key in value) scratch[count++] = key;
    if (count === 0) return NO_KEYS;
    shapes: for (let s = 0; s < SHAPES; s++) {
      const known = this.shapeKeys[s];
      if (known === undefined || known.length !== count) continue;
      for (let i = 0; i < count; i++) if (known[i] !== scratch[i]) continue shapes;
      return this.shapeSorted[s]!;
    }
    const keys = scratch.slice(0, count);
    let sorted = keys;
    for (let i = 1; i < count; i++) {
      // Default sort order is UTF-16 code unit order, as RFC 8785 sorts keys.
      if (!(keys[i - 1] < keys[i])) {
        sorted = keys.slice().sort();
        break;
      }
    }
    if (count <= 64) {
      this.shapeKeys[this.nextShape] = keys;
      this.shapeSorted[this.nextShape] = sorted;
      this.nextShape = (this.nextShape + 1) % SHAPES;
    }
    return sorted;
  }

  private longString(value: string): void {
    // A lone surrogate would become U+FFFD in UTF-8: such strings go as UTF-16 code units.
    const wellFormed = isWellFormed(value);
    const encoding = wellFormed ? 'utf8' : 'utf16le';
    const maxBytes = value.length * (wellFormed ? 3 : 2);
    if (this.position + 6 + maxBytes <= CHUNK + SLACK) {
      const length = wellFormed ? Buffer.byteLength(value, 'utf8') : value.length;
      const at = this.headerAt(this.position, wellFormed ? Tag.Utf8 : Tag.Utf16, length);
      this.position = at + this.buffer.write(value, at, encoding);
      return;
    }
    const length = wellFormed ? Buffer.byteLength(value, 'utf8') : value.length;
    this.header(wellFormed ? Tag.Utf8 : Tag.Utf16, length);
    this.flush();
    this.hasher!.update(value, encoding);
  }

  /** A tag and a 32-bit little-endian length. */
  private header(tag: number, length: number): void {
    if (this.position > CHUNK) this.flush();
    this.position = this.headerAt(this.position, tag, length);
  }

  private headerAt(p: number, tag: number, length: number): number {
    const b = this.buffer;
    b[p++] = tag;
    while (length > 0x7f) {
      b[p++] = (length & 0x7f) | 0x80;
      length >>>= 7;
    }
    b[p++] = length;
    return p;
  }

  private flush(): void {
    this.hasher ??= createHash('sha256');
    if (this.position > 0) this.hasher.update(this.buffer.subarray(0, this.position));
    this.position = 0;
  }
}

const barePrototypes = new WeakSet<object>();

/**
 * A prototype that adds nothing (no properties up to Object.prototype or null), as
 * fast-querystring gives Fastify's form bodies: such an object is its own properties.
 */
function isBare(prototype: object): boolean {
  if (barePrototypes.has(prototype)) return true;
  for (let p: object | null = prototype; p !== null && p !== objectPrototype;) {
    if (Reflect.ownKeys(p).length > 0) return false;
    p = Object.getPrototypeOf(p);
  }
  barePrototypes.add(prototype);
  return true;
}

function isWellFormed(value: string): boolean {
  // ES2024, in every Node this package supports; the project's lib is ES2022.
  return (value as unknown as { isWellFormed(): boolean }).isWellFormed();
}

let shared: FingerprintEncoder | undefined;
let sharedBusy = false;

/** Runs `write` on a fresh encoding and returns its SHA-256. Synchronous, so one buffer serves all. */
export function digestOf(write: (encoder: FingerprintEncoder) => void): Buffer {
  if (sharedBusy) return encodeWith(new FingerprintEncoder(), write);
  sharedBusy = true;
  try {
    return encodeWith((shared ??= new FingerprintEncoder()), write);
  } finally {
    sharedBusy = false;
  }
}

function encodeWith(encoder: FingerprintEncoder, write: (encoder: FingerprintEncoder) => void) {
  encoder.reset();
  write(encoder);
  return encoder.digest();
}

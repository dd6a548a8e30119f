#!/usr/bin/env python3
"""Generate crates/api/src/protobuf/schema.txt, the table skiff's protobuf decoder loads.

The decoder (crates/api/src/protobuf) turns Kubernetes protobuf request bodies into the JSON
object upstream's JSON encoding gives for the same Go object. For every message it needs:

  * field numbers and wire types          <- the k8s-pb crate (prost-generated Rust, read as
                                             text from the cargo registry; never a dependency)
  * each field's JSON name, whether it is
    inlined (`json:",inline"`) and whether
    a zero value means "unset" (a non-pointer
    Go field with `omitempty`)             <- the Go struct tags and field kinds compiled into
                                             the kubectl binary (Go keeps both for reflection;
                                             this is the exact source upstream's JSON uses)
  * JSON names of fields kubectl lacks
    (added after its release)              <- k8s-openapi's serde field names

Why the Go pointer-ness matters: Go's protobuf encoder always writes non-pointer scalars, so
`restartPolicy: ""` or `timeoutSeconds: 0` arrive on the wire although the JSON encoding
would omit them (and our defaulting only fills missing fields); for pointer fields
(`replicas: 0`, `gracePeriodSeconds: 0`, `automountServiceAccountToken: false`) the zero is
meaningful and must be kept.

Usage (Python 3 standard library only):

    python3 tools/protobuf/generate.py [--kubectl PATH] [--out PATH]

Defaults: kubectl from PATH, k8s-pb 0.9.0 and k8s-openapi 0.29 (v1_37) from
~/.cargo/registry/src/*/, output crates/api/src/protobuf/schema.txt. Which kinds are
covered: every message with a Kubernetes Resource impl in the group/versions that
crates/api/src/registry.rs serves, plus EXTRA_KINDS below, and everything they reference.
"""

import argparse
import glob
import os
import re
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Kinds served as request bodies that are not top-level resources of a served group.
EXTRA_KINDS = [
    ("policy/v1", "Eviction", "k8s.io.api.policy.v1.Eviction"),
    ("autoscaling/v1", "Scale", "k8s.io.api.autoscaling.v1.Scale"),
    ("v1", "Binding", "k8s.io.api.core.v1.Binding"),
    ("authentication.k8s.io/v1", "TokenRequest", "k8s.io.api.authentication.v1.TokenRequest"),
    # client-go encodes DeleteOptions with the group/version of the client that sends it;
    # the decoder accepts it under any apiVersion (see mod.rs).
    ("meta.k8s.io/v1", "DeleteOptions", "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions"),
]

META = "k8s.io.apimachinery.pkg.apis.meta.v1."
# Messages whose JSON form is not an object (see decode.rs for each encoding).
SPECIAL = {
    META + "Time": "time",
    META + "MicroTime": "microtime",
    META + "Duration": "duration",
    META + "FieldsV1": "rawjson",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "rawjson",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "quantity",
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue": "quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "intorstring",
    "k8s.io.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON": "rawjson",
}

SCALARS = {"string", "bytes", "bool", "int32", "int64", "double"}


def norm(name):
    """A field name compared across naming styles: `volume_id`, `volumeID`, `r#type`."""
    return name.replace("r#", "").replace("_", "").lower()


# ---------------------------------------------------------------------------------------
# k8s-pb: messages, fields, resources


def registry_dir(crate):
    hits = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/" + crate)))
    if not hits:
        sys.exit("generate.py: %s not found in ~/.cargo/registry/src (run cargo fetch)" % crate)
    return hits[-1]


def proto_package(mod_path):
    """k8s-pb module path (["api","core","v1"]) -> proto package (k8s.io.api.core.v1)."""
    first = mod_path[0].replace("_", "-")
    return ".".join(["k8s.io", first] + mod_path[1:])


PROST_RE = re.compile(r'#\[prost\((.*)\)\]')


def parse_k8s_pb(src):
    messages = {}  # proto full name (prost casing) -> {fields, doc, rust, mod}
    resources = []  # (apiVersion, kind, message)
    for path in sorted(glob.glob(os.path.join(src, "**", "mod.rs"), recursive=True)):
        mod_path = os.path.relpath(os.path.dirname(path), src).split(os.sep)
        if mod_path == ["."]:
            continue
        pkg = proto_package(mod_path)
        lines = open(path, encoding="utf-8").read().split("\n")
        doc = []
        cur = None
        i = 0
        impl_for = None
        while i < len(lines):
            line = lines[i]
            m = re.match(r"pub struct (\w+) \{", line)
            if m:
                cur = {"name": m.group(1), "fields": [], "doc": "\n".join(doc), "pkg": pkg, "mod": mod_path}
                messages[pkg + "." + m.group(1)] = cur
            elif line == "}":
                cur = None
            elif cur is not None and PROST_RE.search(line):
                attr = PROST_RE.search(line).group(1)
                # The declaration follows, maybe wrapped over several lines.
                j = i + 1
                while not lines[j].strip().startswith("pub "):
                    j += 1
                decl = lines[j].strip()
                while decl.count("<") != decl.count(">") or not decl.endswith(","):
                    j += 1
                    decl += lines[j].strip()
                decl = re.sub(r",\s*>", ">", decl)
                fname, ftype = decl[4:].split(":", 1)
                cur["fields"].append(parse_field(attr, fname.strip(), ftype.strip().rstrip(","), mod_path))
                i = j
            m = re.match(r"impl crate::Resource for (\w+) \{", line)
            if m:
                impl_for = m.group(1)
            m = re.match(r'\s*const API_VERSION: &\'static str = "([^"]*)";', line)
            if m and impl_for:
                api_version = m.group(1)
            m = re.match(r'\s*const KIND: &\'static str = "([^"]*)";', line)
            if m and impl_for:
                resources.append((api_version, m.group(1), pkg + "." + impl_for))
                impl_for = None
            if line.startswith("///"):
                doc.append(line[3:].strip())
            elif not line.startswith("#["):
                doc = []
            i += 1
    return messages, resources


def resolve_rust_path(path, mod_path):
    """`super::super::apimachinery::pkg::apis::meta::v1::ObjectMeta` seen from mod_path."""
    parts = path.split("::")
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    else:
        base = list(mod_path)
        while parts[0] == "super":
            base.pop()
            parts = parts[1:]
    mods, name = base + parts[:-1], parts[-1]
    return proto_package(mods) + "." + name


def last_type_arg(ty):
    """The message type inside Option<..>/Vec<..>/Box<..>/BTreeMap<String, ..>."""
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        if ty.startswith(wrapper):
            return last_type_arg(ty[len(wrapper):-1])
    if ty.startswith("::prost::alloc::collections::BTreeMap<"):
        inner = ty[len("::prost::alloc::collections::BTreeMap<"):-1]
        return last_type_arg(inner.split(",", 1)[1].strip())
    return ty


def parse_field(attr, rust_name, rust_type, mod_path):
    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
    f = {"tag": tag, "rust": rust_name, "card": "single"}
    m = re.match(r'btree_map = "string, (\w+)"', attr)
    if m:
        f["card"] = "map"
        kind = m.group(1)
    else:
        kind = attr.split(",")[0].strip()
        if kind.startswith("bytes"):
            kind = "bytes"
        if re.search(r"\brepeated\b", attr):
            f["card"] = "repeated"
    if kind == "message":
        f["type"] = resolve_rust_path(last_type_arg(rust_type), mod_path)
    elif kind in SCALARS:
        f["type"] = kind
    else:
        raise SystemExit("generate.py: unsupported prost attribute %r" % attr)
    return f


# ---------------------------------------------------------------------------------------
# kubectl: Go struct tags and field kinds from the binary's reflection data

GO_KIND_PTR, GO_KIND_STRUCT = 22, 25


def parse_kubectl(path):
    """{(go package path, struct name): {proto tag: (json tag, go kind)}} for k8s.io types.

    Go keeps, for reflection, one type descriptor per type: `abi.Type` (48 bytes, kind byte
    at +23, tflag at +20, name offset at +40), for structs followed by the package name
    pointer (+48) and the []StructField slice (+56 ptr, +64 len, +72 cap), then the
    `uncommon` block (+80, package path offset). Each StructField is {name *byte,
    typ *Type, offset}; the name bytes carry the field name and its tag. Type descriptors
    live in .rodata of this statically linked (non-PIE) binary, so pointers are plain
    virtual addresses.
    """
    d = open(path, "rb").read()
    if d[:4] != b"\x7fELF":
        raise SystemExit("generate.py: %s is not an ELF binary" % path)
    shoff = struct.unpack_from("<Q", d, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 0x3A)
    secs = [struct.unpack_from("<IIQQQQ", d, shoff + i * shentsize) for i in range(shnum)]
    stroff = secs[shstrndx][4]
    ro = None
    for nm, _typ, _flags, addr, off, size in secs:
        if d[stroff + nm: d.index(b"\0", stroff + nm)] == b".rodata":
            ro = (addr, off, size)
    if ro is None:
        raise SystemExit("generate.py: no .rodata in %s" % path)
    ra, roff, rsize = ro

    def at(addr):
        return roff + (addr - ra)

    def inro(a):
        return ra <= a < ra + rsize

    def u64(a):
        return struct.unpack_from("<Q", d, at(a))[0]

    def varint(p):
        n = sh = 0
        while True:
            b = d[p]
            p += 1
            n |= (b & 0x7F) << sh
            sh += 7
            if b < 0x80:
                return n, p

    def name_at(a):
        p = at(a)
        flags = d[p]
        n, p = varint(p + 1)
        name = d[p: p + n].decode("utf-8", "replace")
        tag = ""
        if flags & 2:
            m, q = varint(p + n)
            tag = d[q: q + m].decode("utf-8", "replace")
        return name, tag

    words = struct.unpack_from("<%dQ" % (rsize // 8), d, roff)
    out = {}
    for i in range(len(words) - 10):
        fp, ln = words[i + 7], words[i + 8]
        if not inro(fp) or ln == 0 or ln > 500 or words[i + 9] != ln:
            continue
        if ((words[i + 2] >> 56) & 31) != GO_KIND_STRUCT:
            continue
        t = ra + i * 8
        try:
            tflag = d[at(t + 20)]
            if not tflag & 1:
                continue
            tname = name_at(ra + struct.unpack_from("<i", d, at(t + 40))[0])[0].lstrip("*")
            pkgpath = name_at(ra + struct.unpack_from("<i", d, at(t + 80))[0])[0]
            if not pkgpath.startswith("k8s.io/"):
                continue
            fields = {}
            for k in range(ln):
                fa = fp + 24 * k
                fname, ftag = name_at(u64(fa + 0))
                m = re.search(r'protobuf:"[a-z0-9]+,(\d+),', ftag)
                if not m:
                    continue
                kind = d[at(u64(fa + 8) + 23)] & 31
                fields[int(m.group(1))] = (ftag, kind, fname)
        except (IndexError, struct.error):
            continue  # not a type descriptor after all
        out[(pkgpath, tname.split(".", 1)[1])] = fields
    return out


# ---------------------------------------------------------------------------------------
# k8s-openapi: JSON names (fallback for fields kubectl does not know)


def parse_openapi(src):
    """{(module path, lowercased struct name): (struct name, {norm(rust field): json name})}"""
    out = {}
    for path in glob.glob(os.path.join(src, "**", "*.rs"), recursive=True):
        text = open(path, encoding="utf-8").read()
        m = re.search(r"^pub struct (\w+) \{", text, re.M)
        if not m:
            continue
        names = {norm(r): j for j, r in re.findall(r'"([A-Za-z0-9_$-]+)" => Field::Key_(\w+),', text)}
        mod_path = tuple(os.path.relpath(os.path.dirname(path), src).split(os.sep))
        out[(mod_path, m.group(1).lower())] = (m.group(1), names)
    return out


# ---------------------------------------------------------------------------------------


def served_group_versions():
    text = open(os.path.join(ROOT, "crates/api/src/registry.rs"), encoding="utf-8").read()
    gvs = set()
    for group, version in re.findall(r'res!\("([^"]*)",\s*"([^"]*)"', text):
        gvs.add(version if not group else group + "/" + version)
    return gvs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kubectl", default=shutil.which("kubectl"))
    ap.add_argument("--out", default=os.path.join(ROOT, "crates/api/src/protobuf/schema.txt"))
    args = ap.parse_args()
    if not args.kubectl:
        sys.exit("generate.py: kubectl not found; pass --kubectl")
    kubectl = os.path.realpath(args.kubectl)

    pb_dir = registry_dir("k8s-pb-0.9.0")
    oa_dir = registry_dir("k8s-openapi-0.29.0")
    messages, resources = parse_k8s_pb(os.path.join(pb_dir, "src"))
    go = parse_kubectl(kubectl)
    openapi = parse_openapi(os.path.join(oa_dir, "src", "v1_37"))

    gvs = served_group_versions()
    kinds = sorted({r for r in resources if r[0] in gvs} | set(EXTRA_KINDS))
    missing = [k for k in kinds if k[2] not in messages]
    if missing:
        sys.exit("generate.py: kinds without a message: %r" % missing)

    # The closure of referenced messages, in a stable order.
    order, seen = [], set()
    stack = sorted({k[2] for k in kinds}, reverse=True)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        order.append(name)
        if name in SPECIAL:
            continue
        for f in reversed(messages[name]["fields"]):
            if f["type"] not in SCALARS and f["type"] not in seen:
                stack.append(f["type"])
    order.sort()

    # prost renames messages (HTTPGetAction -> HttpGetAction); the table uses upstream's
    # names, which Go and k8s-openapi both keep.
    canon = {}
    for name in order:
        msg = messages[name]
        go_pkg = msg["pkg"].replace(".", "/").replace("k8s/io/", "k8s.io/", 1)
        upstream = [gn for (gp, gn) in go if gp == go_pkg and gn.lower() == msg["name"].lower()]
        oa = openapi.get((tuple(msg["mod"]), msg["name"].lower()))
        canon[name] = msg["pkg"] + "." + (upstream[0] if upstream else oa[0] if oa else msg["name"])

    warnings = []
    body = []
    from_go = from_openapi = 0
    for name in sorted(order, key=lambda n: canon[n]):
        msg = messages[name]
        pkg = msg["pkg"]
        go_pkg = pkg.replace(".", "/").replace("k8s/io/", "k8s.io/", 1)
        go_struct = None
        for (gp, gn), fields in go.items():
            if gp == go_pkg and gn.lower() == msg["name"].lower():
                go_struct, go_name = fields, gn
        oa = openapi.get((tuple(msg["mod"]), msg["name"].lower()))
        special = SPECIAL.get(name)
        # A Go named slice type (`type ExtraValue []string`) travels as a message with one
        # repeated field but is a JSON array.
        if not special and "+protobuf.nullable=true" in msg["doc"] and len(msg["fields"]) == 1 \
                and msg["fields"][0]["card"] == "repeated":
            special = "array"
        body.append("message %s%s" % (canon[name], " " + special if special else ""))
        if special and special != "array":
            continue
        for f in msg["fields"]:
            json, inline, omit_zero = None, False, False
            gf = go_struct.get(f["tag"]) if go_struct else None
            if gf:
                from_go += 1
                tag, kind, go_field = gf
                m = re.search(r'json:"([^"]*)"', tag)
                opts = m.group(1).split(",") if m else ["-"]
                pm = re.search(r'name=([^,"]+)', tag)
                pname = pm.group(1) if pm else go_field
                if norm(pname) != norm(f["rust"]):
                    sys.exit("generate.py: %s field %d is %s in Go, %s in k8s-pb" % (name, f["tag"], pname, f["rust"]))
                json = opts[0]
                inline = "inline" in opts[1:]
                omit_zero = ("omitempty" in opts[1:] and kind != GO_KIND_PTR
                             and f["card"] == "single" and f["type"] in SCALARS)
            elif special == "array":
                json = "items"
            elif oa and norm(f["rust"]) in oa[1]:
                from_openapi += 1
                json = oa[1][norm(f["rust"])]
            elif oa and f["type"] in messages and all(
                    norm(x["rust"]) in oa[1] for x in messages[f["type"]]["fields"]):
                inline = True  # k8s-openapi flattens embedded Go structs
            else:
                parts = f["rust"].replace("r#", "").split("_")
                json = parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
                warnings.append("%s.%s: JSON name guessed as %s" % (name, f["rust"], json))
            if json == "-" or (json == "" and not inline):
                sys.exit("generate.py: %s field %d has no JSON form" % (name, f["tag"]))
            ty = canon.get(f["type"], f["type"])
            if ty not in SCALARS and ty.rsplit(".", 1)[0] == pkg:
                ty = ty.rsplit(".", 1)[1]
            if f["card"] == "repeated":
                ty = "[]" + ty
            elif f["card"] == "map":
                ty = "map[string]" + ty
            body.append("  %d %s %s%s" % (f["tag"], "~" if inline else json, ty, " z" if omit_zero else ""))

    head = [
        "# The protobuf schema skiff's decoder loads (crates/api/src/protobuf). GENERATED by",
        "# tools/protobuf/generate.py from k8s-pb 0.9.0 (field numbers, types), the Go struct tags in",
        "# kubectl %s (JSON names, inlining, zero-means-unset) and k8s-openapi 0.29" % kubectl_version(kubectl),
        "# (JSON names of newer fields). Do not edit: run `python3 tools/protobuf/generate.py`.",
        "#",
        "# kind <apiVersion> <Kind> <message>            a top-level kind a request body may carry",
        "# message <name> [time|microtime|duration|quantity|intorstring|rawjson|array]",
        "#   <tag> <jsonName> <type> [z]",
        "#     jsonName `~`: the Go field is embedded (`json:\",inline\"`): its fields join the parent",
        "#     type: string bytes bool int32 int64 double or a message (bare = same package);",
        "#           `[]T` repeated, `map[string]T` a map",
        "#     z: a non-pointer Go field with omitempty: its zero value means unset and is dropped",
        "",
    ]
    for api_version, kind, message in kinds:
        head.append("kind %s %s %s" % (api_version, kind, canon[message]))
    head.append("")
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(head + body) + "\n")
    for w in warnings:
        print("warning:", w, file=sys.stderr)
    print("wrote %s: %d kinds, %d messages; fields named from kubectl's Go tags: %d, from k8s-openapi: %d, guessed: %d"
          % (os.path.relpath(args.out, ROOT), len(kinds), len(order), from_go, from_openapi, len(warnings)))


def kubectl_version(path):
    import json
    import subprocess
    out = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, check=True)
    return json.loads(out.stdout)["clientVersion"]["gitVersion"]


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""A real XMPP client (slixmpp) for mftd's integration tests.

It logs in over c2s, finds the upload service through the domain's
disco#items the way chat clients do, and then either prints what it
discovered, sends one raw slot request and prints the reply, or performs a
whole upload (slot, HTTP PUT, HTTP GET) and prints a JSON summary.
"""
import argparse
import asyncio
import hashlib
import json
import re
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

NS_UPLOAD = "urn:xmpp:http:upload:0"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, args):
        super().__init__(jid, password)
        self.args = args
        self.result = None
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0045")
        self.register_plugin("xep_0066")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0050")
        self.received = []
        self.got_enough = asyncio.Event()
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("failed_auth", self.failed)

    def failed(self, _event):
        self.result = {"error": "authentication failed"}
        self.disconnect()

    async def discover(self):
        items = await self["xep_0030"].get_items(jid=self.boundjid.domain, timeout=10)
        found = []
        for item in items["disco_items"]["items"]:
            jid = item[0]
            info = await self["xep_0030"].get_info(jid=jid, timeout=10)
            features = info["disco_info"]["features"]
            if NS_UPLOAD in features:
                max_size = None
                for form in info["disco_info"].xml.findall("{jabber:x:data}x"):
                    fields = {
                        f.get("var"): [v.text for v in f.findall("{jabber:x:data}value")]
                        for f in form.findall("{jabber:x:data}field")
                    }
                    if fields.get("FORM_TYPE") == [NS_UPLOAD]:
                        max_size = int(fields["max-file-size"][0])
                identities = [list(i[:2]) for i in info["disco_info"]["identities"]]
                found.append({"jid": jid, "max_file_size": max_size, "identities": identities,
                              "features": sorted(features)})
        return {"items": [i[0] for i in items["disco_items"]["items"]], "services": found}

    async def raw_iq(self, to, payload, kind="get"):
        iq = self.make_iq(ito=to, itype=kind)
        iq.append(ET.fromstring(payload))
        try:
            reply = await iq.send(timeout=10)
        except IqError as e:
            reply = e.iq
        return str(reply)

    async def raw_iqs(self, to, payloads, kind="get"):
        """Sends each payload in turn; a reply (result or error) or 'timeout' for each."""
        replies = []
        for payload in payloads:
            try:
                replies.append(await self.raw_iq(to, payload, kind))
            except IqTimeout:
                replies.append("timeout")
        return replies

    async def request_slot(self, service, filename, size, content_type, destination=None,
                           purpose=None, expire_before=None):
        req = ET.Element("{%s}request" % NS_UPLOAD, filename=filename, size=str(size))
        if content_type:
            req.set("content-type", content_type)
        if destination:
            ET.SubElement(req, "{urn:mftd:destination:0}destination", jid=destination)
        if purpose:
            p = ET.SubElement(req, "{urn:xmpp:http:upload:purpose:0}%s" % purpose)
            if expire_before:
                p.set("expire-before", expire_before)
        iq = self.make_iq_get(ito=service)
        iq.append(req)
        reply = await iq.send(timeout=10)
        slot = reply.xml.find("{%s}slot" % NS_UPLOAD)
        put = slot.find("{%s}put" % NS_UPLOAD)
        headers = {h.get("name"): h.text for h in put.findall("{%s}header" % NS_UPLOAD)}
        return put.get("url"), headers, slot.find("{%s}get" % NS_UPLOAD).get("url")

    async def slot_round_trips(self, service, count, parallel):
        """Times `count` slot requests, `parallel` in flight at a time."""
        import time
        latencies = []
        refused = []

        async def one(i):
            started = time.perf_counter()
            try:
                await self.request_slot(service, "f%d.bin" % i, 1000, None)
            except IqError as e:
                refused.append(e.iq["error"]["condition"])
            latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        for first in range(0, count, parallel):
            await asyncio.gather(*(one(i) for i in range(first, min(first + parallel, count))))
        elapsed = time.perf_counter() - started
        latencies.sort()
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
        return {"count": count, "granted": count - len(refused), "refused": refused,
                "seconds": elapsed, "per_second": count / elapsed,
                "p50_ms": pick(0.50), "p99_ms": pick(0.99)}

    async def upload(self):
        a = self.args
        found = await self.discover()
        if not found["services"]:
            return {"error": "no upload service in disco#items", "discovered": found}
        service = found["services"][0]["jid"]
        with open(a.file, "rb") as f:
            data = f.read()
        name = a.name or a.file.rsplit("/", 1)[-1]
        put_url, headers, get_url = await self.request_slot(service, name, len(data), a.content_type, a.destination,
                                                            a.purpose, a.expire_before)
        put_headers = dict(headers)
        if a.content_type:
            put_headers["Content-Type"] = a.content_type
        status = http("PUT", put_url, data, put_headers)[0]
        got_status, body, got_headers = http("GET", get_url)
        return {
            "service": service,
            "put_url": put_url,
            "get_url": get_url,
            "put_headers": sorted(headers),
            "put_status": status,
            "get_status": got_status,
            "get_content_type": got_headers.get("content-type"),
            "sha256_sent": hashlib.sha256(data).hexdigest(),
            "sha256_got": hashlib.sha256(body).hexdigest(),
        }

    async def adhoc(self):
        """Runs XEP-0050 ad-hoc command steps through slixmpp's xep_0050.

        --steps is a JSON list; each step is either {"list": true} (the
        commands disco#items lists, and the service's disco#info features) or
        {"node": N, "action": A, "fields": {var: value}, "raw": XML,
        "sessionid": S}. A step continues the previous step's session unless
        its action is "execute" or it names "sessionid" itself (null: none).
        """
        a = self.args
        to = a.to
        out = []
        sessionid = None
        node = None
        for st in json.loads(a.steps):
            if st.get("list"):
                items = await self["xep_0050"].get_commands(to, timeout=10)
                info = await self["xep_0030"].get_info(jid=to, timeout=10)
                out.append({"commands": [{"jid": str(i[0]), "node": i[1], "name": i[2]}
                                         for i in items["disco_items"]["items"]],
                            "features": sorted(info["disco_info"]["features"])})
                continue
            node = st.get("node", node)
            action = st.get("action", "execute")
            if "sessionid" in st:
                sid = st["sessionid"]
            else:
                sid = None if action == "execute" else sessionid
            payload = None
            if "fields" in st:
                form = self["xep_0004"].make_form(ftype=st.get("form_type", "submit"))
                for var, value in st["fields"].items():
                    form.add_field(var=var, value=value)
                payload = form
            elif "raw" in st:
                payload = ET.fromstring(st["raw"])
            try:
                reply = await self["xep_0050"].send_command(to, node, action=action, payload=payload,
                                                            sessionid=sid, timeout=10)
            except IqError as e:
                reply = e.iq
            except IqTimeout:
                out.append({"type": "timeout"})
                continue
            parsed = command_reply(reply)
            if parsed.get("sessionid"):
                sessionid = parsed["sessionid"]
            out.append(parsed)
        return {"steps": out}

    async def send_message(self):
        """Sends one message with a body and, optionally, an XEP-0066 URL."""
        a = self.args
        mtype = "chat"
        if a.nick:
            await self.plugin["xep_0045"].join_muc_wait(a.to, a.nick, maxstanzas=0, timeout=10)
            mtype = "groupchat"
        msg = self.make_message(mto=a.to, mbody=a.body, mtype=mtype)
        if a.oob:
            msg["oob"]["url"] = a.oob
        msg.send()
        await asyncio.sleep(0.5)
        return {"sent": True}

    def fetch_all(self, urls):
        """GETs each loopback URL (and hosts --resolve maps): the tests never leave this machine."""
        def local(u):
            return u.startswith("http://127.0.0.1") or urllib.parse.urlsplit(u).hostname in RESOLVED
        fetched = []
        for url in sorted(set(u for u in urls if local(u))):
            try:
                status, body, _ = http("GET", url)
            except OSError:
                status, body = 0, b""  # nothing listening: the service is away
            fetched.append({"url": url, "status": status, "sha256": hashlib.sha256(body).hexdigest()})
        return fetched

    def note(self, el, via):
        """Records one message (a jabber:client <message/> element), fetching its URLs if asked."""
        body_el = el.find("{jabber:client}body")
        body = body_el.text if body_el is not None and body_el.text else ""
        oob_el = el.find("{jabber:x:oob}x/{jabber:x:oob}url")
        oob = oob_el.text if oob_el is not None and oob_el.text else None
        delay = el.find("{urn:xmpp:delay}delay")
        urls = re.findall(r"https?://\S+", body) + ([oob] if oob else [])
        fetched = self.fetch_all(urls) if self.args.fetch else []
        self.received.append({"from": el.get("from"), "to": el.get("to"), "type": el.get("type"),
                              "body": body, "oob": oob, "via": via,
                              "delay": delay.get("stamp") if delay is not None else None,
                              "fetched": fetched})
        if len(self.received) >= self.args.count:
            self.got_enough.set()

    def on_message(self, msg):
        if msg["type"] == "error":
            return
        # XEP-0280 carbons come from our own bare JID only (anything else is a forgery).
        for kind in ("sent", "received"):
            inner = msg.xml.find("{urn:xmpp:carbons:2}%s/{urn:xmpp:forward:0}forwarded/{jabber:client}message" % kind)
            if inner is not None:
                if msg["from"].bare == self.boundjid.bare:
                    self.note(inner, "carbon-" + kind)
                return
        if msg["type"] == "headline" or not msg["body"]:
            return
        if msg["type"] == "groupchat" and msg["mucnick"] == self.args.nick:
            return
        self.note(msg.xml, "direct")

    async def receive(self):
        """Waits for messages (joining a room first if asked), fetching the URLs in them."""
        a = self.args
        self.add_event_handler("message", self.on_message)
        # slixmpp raises "message" only for a message with a <body/>: carbons
        # carry theirs inside <forwarded/>.
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath
        for kind in ("sent", "received"):
            self.register_handler(Callback("carbons " + kind,
                                           MatchXPath("{jabber:client}message/{urn:xmpp:carbons:2}" + kind),
                                           self.on_message))
        if a.carbons:
            iq = self.make_iq_set()
            iq.append(ET.fromstring("<enable xmlns='urn:xmpp:carbons:2'/>"))
            await iq.send(timeout=10)
        # Available, so messages to the bare JID reach this session (and
        # messages stored offline are delivered).
        self.send_presence()
        await asyncio.sleep(0.2)
        if a.nick:
            await self.plugin["xep_0045"].join_muc_wait(a.join, a.nick, maxstanzas=0, timeout=10)
        if a.ready:
            open(a.ready, "w").close()
        try:
            await asyncio.wait_for(self.got_enough.wait(), a.timeout)
        except asyncio.TimeoutError:
            pass
        return {"messages": self.received}

    async def mam(self):
        """Fetches the user's own archive (XEP-0313), without sending presence first,
        and records (and fetches, with --fetch) each archived message."""
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath
        results = []

        def on_result(msg):
            # From our own account: no 'from' at all, or our bare JID.
            sender = msg.xml.get("from")
            if sender and slixmpp.JID(sender).bare != self.boundjid.bare:
                return
            inner = msg.xml.find("{urn:xmpp:mam:2}result/{urn:xmpp:forward:0}forwarded/{jabber:client}message")
            if inner is not None:
                results.append(inner)

        self.register_handler(Callback("mam results", MatchXPath("{jabber:client}message/{urn:xmpp:mam:2}result"),
                                       on_result))
        iq = self.make_iq_set()
        iq.append(ET.fromstring("<query xmlns='urn:xmpp:mam:2' queryid='all'/>"))
        await iq.send(timeout=10)
        # The results come before the IQ result; give the handlers a turn.
        await asyncio.sleep(0.2)
        self.args.count = 1 << 30
        for el in results:
            self.note(el, "mam")
        return {"messages": self.received}

    async def start(self, _event):
        a = self.args
        try:
            if a.command == "discover":
                self.result = await self.discover()
            elif a.command == "iq":
                self.result = {"reply": await self.raw_iq(a.to, a.payload, a.type)}
            elif a.command == "iqs":
                with open(a.payloads) as f:
                    payloads = json.load(f)
                self.result = {"replies": await self.raw_iqs(a.to, payloads, a.type)}
            elif a.command == "upload":
                self.result = await self.upload()
            elif a.command == "send":
                self.result = await self.send_message()
            elif a.command == "receive":
                self.result = await self.receive()
            elif a.command == "mam":
                self.result = await self.mam()
            elif a.command == "slot":
                put_url, headers, get_url = await self.request_slot(a.to, a.filename, a.size, None)
                self.result = {"put_url": put_url, "headers": headers, "get_url": get_url}
            elif a.command == "adhoc":
                self.result = await self.adhoc()
            elif a.command == "slots":
                self.result = await self.slot_round_trips(a.to, a.count, a.parallel)
        except (IqError, IqTimeout) as e:
            self.result = {"error": repr(e)}
        finally:
            self.disconnect()


NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"


def data_form(x):
    """A jabber:x:data form as JSON: fields with their values and options, a table's items."""
    def field(f):
        return {"type": f.get("type"), "label": f.get("label"),
                "values": [v.text or "" for v in f.findall("{%s}value" % NS_DATA)],
                "options": [{"label": o.get("label"), "value": (o.find("{%s}value" % NS_DATA).text or "")}
                            for o in f.findall("{%s}option" % NS_DATA)]}
    title = x.find("{%s}title" % NS_DATA)
    reported = x.find("{%s}reported" % NS_DATA)
    return {
        "type": x.get("type"),
        "title": title.text if title is not None else None,
        "fields": {f.get("var"): field(f) for f in x.findall("{%s}field" % NS_DATA)},
        "columns": [f.get("var") for f in reported.findall("{%s}field" % NS_DATA)] if reported is not None else [],
        "items": [{f.get("var"): " ".join(v.text or "" for v in f.findall("{%s}value" % NS_DATA))
                   for f in item.findall("{%s}field" % NS_DATA)}
                  for item in x.findall("{%s}item" % NS_DATA)],
    }


def command_reply(iq):
    """An ad-hoc command's answer (or error) as JSON."""
    if iq["type"] == "error":
        error = iq.xml.find("{jabber:client}error")
        conditions = [c.tag.split("}")[1] for c in error] if error is not None else []
        text = error.find("{urn:ietf:params:xml:ns:xmpp-stanzas}text") if error is not None else None
        echo = iq.xml.find("{%s}command" % NS_COMMANDS)
        return {"type": "error", "error_type": error.get("type") if error is not None else None,
                "conditions": [c for c in conditions if c != "text"],
                "text": text.text if text is not None else None,
                "command": {"node": echo.get("node"), "sessionid": echo.get("sessionid")}
                if echo is not None else None,
                "raw": str(iq)}
    cmd = iq.xml.find("{%s}command" % NS_COMMANDS)
    if cmd is None:
        return {"type": iq["type"], "raw": str(iq)}
    actions = cmd.find("{%s}actions" % NS_COMMANDS)
    x = cmd.find("{%s}x" % NS_DATA)
    return {
        "type": "result",
        "status": cmd.get("status"),
        "sessionid": cmd.get("sessionid"),
        "node": cmd.get("node"),
        "actions": [c.tag.split("}")[1] for c in actions] if actions is not None else [],
        "execute": actions.get("execute") if actions is not None else None,
        "notes": [{"type": n.get("type"), "text": n.text or ""} for n in cmd.findall("{%s}note" % NS_COMMANDS)],
        "form": data_form(x) if x is not None else None,
        "raw": str(iq),
    }


# --cafile: the TLS context for HTTPS (None: the system's trust store).
HTTPS_CONTEXT = None
# --resolve: host -> address.
RESOLVED = {}


def http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60, context=HTTPS_CONTEXT) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}


def resolve(table):
    """Answers name lookups of the hosts in `table` with their given address."""
    import socket
    RESOLVED.update(table)
    real = socket.getaddrinfo

    def getaddrinfo(host, *rest, **kw):
        return real(table.get(host, host), *rest, **kw)

    socket.getaddrinfo = getaddrinfo


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--server", required=True, help="host:port of c2s")
    p.add_argument("--starttls", action="store_true",
                   help="require STARTTLS on c2s (verified against --cafile or the system's CAs)")
    p.add_argument("--cafile", help="trust these PEM certificates (XMPP and HTTPS) instead of the system's")
    p.add_argument("--resolve", action="append", default=[], metavar="HOST:ADDRESS",
                   help="connect to ADDRESS whenever HOST is asked for (as curl --resolve)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("discover")
    iq = sub.add_parser("iq")
    iq.add_argument("--to", required=True)
    iq.add_argument("--type", default="get")
    iq.add_argument("payload")
    iqs = sub.add_parser("iqs")
    iqs.add_argument("--to", required=True)
    iqs.add_argument("--type", default="get")
    iqs.add_argument("payloads", help="a JSON file holding a list of payloads")
    se = sub.add_parser("send")
    se.add_argument("--to", required=True, help="a user, or a room with --nick")
    se.add_argument("--body", required=True)
    se.add_argument("--oob", help="XEP-0066 URL")
    se.add_argument("--nick", help="join --to as a room with this nick and send a groupchat message")
    rc = sub.add_parser("receive")
    rc.add_argument("--count", type=int, default=1)
    rc.add_argument("--timeout", type=float, default=30)
    rc.add_argument("--join", help="a room to join first")
    rc.add_argument("--nick", help="the nick in --join")
    rc.add_argument("--fetch", action="store_true", help="GET every URL received")
    rc.add_argument("--ready", help="a file to create once listening")
    rc.add_argument("--carbons", action="store_true", help="enable XEP-0280 message carbons first")
    ma = sub.add_parser("mam")
    ma.add_argument("--fetch", action="store_true", help="GET every URL in the archive")
    up = sub.add_parser("upload")
    up.add_argument("--file", required=True)
    up.add_argument("--name")
    up.add_argument("--content-type")
    up.add_argument("--destination", help="intended recipient JID (mftd's destination element)")
    up.add_argument("--purpose", help="XEP-0363 1.2 purpose: message, profile, ephemeral, permanent")
    up.add_argument("--expire-before", help="XEP-0082 time for --purpose ephemeral")
    sl = sub.add_parser("slot")
    sl.add_argument("--to", required=True)
    sl.add_argument("--filename", required=True)
    sl.add_argument("--size", type=int, required=True)
    ah = sub.add_parser("adhoc", help="XEP-0050 ad-hoc command steps (see Client.adhoc)")
    ah.add_argument("--to", required=True, help="the service's JID")
    ah.add_argument("--steps", required=True, help="a JSON list of steps")
    sls = sub.add_parser("slots")
    sls.add_argument("--to", required=True)
    sls.add_argument("--count", type=int, default=1000)
    sls.add_argument("--parallel", type=int, default=10)
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if os.environ.get("MFT_CLIENT_DEBUG") else logging.ERROR)
    if args.resolve:
        resolve(dict(r.split(":", 1) for r in args.resolve))
    global HTTPS_CONTEXT
    if args.cafile:
        import ssl
        HTTPS_CONTEXT = ssl.create_default_context(cafile=args.cafile)
    host, port = args.server.rsplit(":", 1)
    client = Client(args.jid, args.password, args)
    if args.starttls:
        if args.cafile:
            client.ca_certs = args.cafile
        client.connect(address=(host, int(port)), use_ssl=False, force_starttls=True, disable_starttls=False)
    else:
        client.connect(address=(host, int(port)), use_ssl=False, force_starttls=False, disable_starttls=True)
    loop = asyncio.get_event_loop()
    loop.run_until_complete(asyncio.wait_for(client.disconnected, 600))
    if client.result is None:
        print(json.dumps({"error": "no result (connection failed?)"}))
        sys.exit(2)
    print(json.dumps(client.result))


if __name__ == "__main__":
    main()

-- mod_mftd: the router-side half of mftd's audit trail (Prosody 0.12, 13).
--
-- XEP-0363 carries no recipient: a client uploads, then sends the download
-- URL in a message. Only the router sees who that message goes to. This
-- module, enabled on each VirtualHost:
--
--  * reports each share to mftd: when a local user sends a message carrying
--    one of mftd's URLs (body, XEP-0066 oob, XEP-0447 sources), it sends the
--    component an IQ naming the file, the sender, the recipient (a user or a
--    room) and the kind of chat (im, groupchat, or persistent for a room whose
--    configuration says persistent);
--  * gives every local recipient a URL of their own: each copy delivered to a
--    local user (1:1, each MUC occupant, offline storage, archives) carries
--    `?for=<claim>`, an HMAC of the recipient's JID with a key shared with
--    mftd, so mftd can log who fetched the file;
--  * gives the same claim inside copies forwarded to a client (XEP-0280
--    carbons, XEP-0313 archive results): each names the session's own user,
--    the sender included for her `sent` carbons and her own archive. These
--    copies are never reported as shares; only a message a user sends is.
--
-- A link counts as mftd's in every spelling a client's URL parser still
-- fetches from mftd (`HTTP://`, `127.1`, `:05443`, `user@`…, see below); a
-- delivered copy carries it in mftd's own spelling with only the
-- recipient's claim, any claim already on it being dropped.
--
-- Messages without mftd URLs are not touched. Encrypted payloads (OMEMO) carry
-- no readable URL and pass unchanged.
--
-- Configuration (in the VirtualHost section or globally):
--   mftd_component  = "upload.example.test"        -- mftd's component JID
--   mftd_url_prefix = "https://upload.example.test:8443/"  -- [http] public_url
--   mftd_share_key  = "…"                          -- [recipients] share_key

---------------------------------------------------------------------------
-- Recognising mftd's links the way a client does.
--
-- A client hands a link to a URL parser (WHATWG in browsers and most
-- libraries), which accepts many spellings of one address: `HTTP://`, an
-- upper-case host, a trailing dot, `user@` in front of the host, a port with
-- leading zeros or the scheme's default port spelt out, IPv4 as `127.1`,
-- `2130706433`, `0x7f.1` or `0177.0.0.1`, IPv6 long or compressed, dot
-- segments and backslashes in the path. Every spelling that still downloads
-- one of mftd's files must be reported and claimed, or a user could forward
-- her own claimed URL in another spelling and the fetches of its recipients
-- would be logged as hers. So links are parsed and compared with mftd's
-- public URL (`mftd_url_prefix`) part by part, after canonicalising both.
--
-- These functions use nothing from Prosody: router/prosody/test_url.lua loads
-- this file with plain lua5.4 and gets them back (see the end of the block).
-- They keep to Lua 5.1 syntax, as Prosody also runs on Lua 5.1 and LuaJIT.

local url = {};

local DEFAULT_PORT = { http = 80, https = 443 };

-- Splits on every `sep` (one character), keeping empty parts.
local function split(s, sep)
	local parts = {};
	for part in (s .. sep):gmatch("([^" .. sep .. "]*)%" .. sep) do
		table.insert(parts, part);
	end
	return parts;
end

local function percent_decode(s)
	return (s:gsub("%%(%x%x)", function (h) return string.char(tonumber(h, 16)); end));
end

-- `%41` and `A` are the same to any server (RFC 3986, 6.2.2.2); other
-- escapes only differ in the case of their hex digits.
local function normalise_escapes(s)
	return (s:gsub("%%(%x%x)", function (h)
		local c = string.char(tonumber(h, 16));
		if c:match("^[%w%-%._~]$") then return c; end
		return "%" .. h:upper();
	end));
end

-- The part of UTS #46 (IDNA mapping, run on every host) that turns other
-- characters into ASCII ones: full-width forms (`ｕｐｌｏａｄ`, `１２７`),
-- the ideographic full stops, and code points IDNA ignores (soft hyphen,
-- zero-width space, joiners, variation selectors, BOM). What is left that
-- is not ASCII cannot be mftd's (ASCII) host.
local function map_host_characters(s)
	s = s:gsub("\239([\188\189])([\128-\191])", function (b2, b3)
		local cp = 0xF000 + (b2:byte() - 0x80) * 64 + (b3:byte() - 0x80);
		if cp >= 0xFF01 and cp <= 0xFF5E then return string.char(cp - 0xFEE0); end
		if cp == 0xFF61 then return "."; end
	end);
	s = s:gsub("\227\128\130", ".");                      -- U+3002
	s = s:gsub("\194\173", "");                           -- U+00AD
	s = s:gsub("\205\143", "");                           -- U+034F
	s = s:gsub("\225\160[\139-\141]", "");                -- U+180B..180D
	s = s:gsub("\226\128\139", "");                       -- U+200B
	s = s:gsub("\226\129\160", "");                       -- U+2060
	s = s:gsub("\239\184[\128-\143]", "");                -- U+FE00..FE0F
	s = s:gsub("\239\187\191", "");                       -- U+FEFF
	return s;
end

-- WHATWG "IPv4 number": decimal, 0x hex or 0-prefixed octal; nil if not one.
local function ipv4_number(s)
	if s == "" then return nil; end
	local radix = 10;
	if s:match("^0[xX]") then
		radix, s = 16, s:sub(3);
	elseif #s > 1 and s:sub(1, 1) == "0" then
		radix, s = 8, s:sub(2);
	end
	if s == "" then return 0; end
	local digits = ({ [8] = "^[0-7]+$", [10] = "^%d+$", [16] = "^%x+$" })[radix];
	if not s:match(digits) then return nil; end
	local n = 0;
	for i = 1, #s do
		n = n * radix + tonumber(s:sub(i, i), 16);
		-- Too large for any part already; stop before floats lose digits.
		if n > 2^32 then return math.huge; end
	end
	return n;
end

-- WHATWG "ends in a number": such a host is parsed as IPv4 or rejected.
local function ends_in_number(host)
	local parts = split(host, ".");
	if parts[#parts] == "" then
		if #parts == 1 then return false; end
		table.remove(parts);
	end
	local last = parts[#parts];
	return last:match("^%d+$") ~= nil or ipv4_number(last) ~= nil;
end

-- WHATWG IPv4 parser: `127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`,
-- `127.0.0.1.` all give "127.0.0.1"; nil when a client would refuse it.
local function parse_ipv4(host)
	local parts = split(host, ".");
	if parts[#parts] == "" and #parts > 1 then table.remove(parts); end
	if #parts > 4 then return nil; end
	local numbers = {};
	for i, part in ipairs(parts) do
		numbers[i] = ipv4_number(part);
		if not numbers[i] then return nil; end
	end
	for i = 1, #numbers - 1 do
		if numbers[i] > 255 then return nil; end
	end
	local value = numbers[#numbers];
	if value >= 256 ^ (5 - #numbers) then return nil; end
	for i = 1, #numbers - 1 do
		value = value + numbers[i] * 256 ^ (4 - i);
	end
	local out = {};
	for i = 4, 1, -1 do
		out[i] = string.format("%d", value % 256);
		value = math.floor(value / 256);
	end
	return table.concat(out, ".");
end

-- WHATWG IPv6 parser (without brackets) and serialiser: lower-case hex,
-- no leading zeros, the first longest run of zero pieces as `::`. An
-- IPv4-mapped address (::ffff:127.0.0.1) reaches the same IPv4 host through
-- a dual-stack socket, so it is returned as that IPv4 address.
local function parse_ipv6(s)
	local a = { [0] = 0, 0, 0, 0, 0, 0, 0, 0 };
	local piece, compress, i = 0, nil, 1;
	local function c(k) return s:sub(k, k); end
	if c(i) == ":" then
		if c(i + 1) ~= ":" then return nil; end
		i, piece = i + 2, 1;
		compress = piece;
	end
	while i <= #s do
		if piece == 8 then return nil; end
		if c(i) == ":" then
			if compress then return nil; end
			i, piece = i + 1, piece + 1;
			compress = piece;
		else
			local value, length = 0, 0;
			while length < 4 and c(i):match("^%x$") do
				value = value * 16 + tonumber(c(i), 16);
				i, length = i + 1, length + 1;
			end
			if c(i) == "." then
				-- An IPv4 address in the last 32 bits.
				if length == 0 or piece > 6 then return nil; end
				i = i - length;
				local seen = 0;
				while i <= #s do
					if seen > 0 then
						if c(i) == "." and seen < 4 then i = i + 1; else return nil; end
					end
					local digits = s:match("^%d+", i);
					if not digits or (#digits > 1 and digits:sub(1, 1) == "0") then return nil; end
					local n = tonumber(digits);
					if n > 255 then return nil; end
					i = i + #digits;
					a[piece] = a[piece] * 256 + n;
					seen = seen + 1;
					if seen == 2 or seen == 4 then piece = piece + 1; end
				end
				if seen ~= 4 then return nil; end
				break;
			elseif c(i) == ":" then
				i = i + 1;
				if i > #s then return nil; end
			elseif i <= #s then
				return nil;
			end
			a[piece] = value;
			piece = piece + 1;
		end
	end
	if compress then
		local swaps = piece - compress;
		piece = 7;
		while piece ~= 0 and swaps > 0 do
			a[piece], a[compress + swaps - 1] = a[compress + swaps - 1], a[piece];
			piece, swaps = piece - 1, swaps - 1;
		end
	elseif piece ~= 8 then
		return nil;
	end
	if a[0] == 0 and a[1] == 0 and a[2] == 0 and a[3] == 0 and a[4] == 0 and a[5] == 0xFFFF then
		return string.format("%d.%d.%d.%d", math.floor(a[6] / 256), a[6] % 256, math.floor(a[7] / 256), a[7] % 256);
	end
	-- The first longest run of two or more zero pieces.
	local best, best_len, run, run_len = nil, 1, nil, 0;
	for k = 0, 7 do
		if a[k] == 0 then
			if not run then run, run_len = k, 0; end
			run_len = run_len + 1;
			if run_len > best_len then best, best_len = run, run_len; end
		else
			run = nil;
		end
	end
	local out, k = "[", 0;
	while k <= 7 do
		if k == best then
			out = out .. (k == 0 and "::" or ":");
			k = k + best_len;
		else
			out = out .. string.format("%x", a[k]) .. (k < 7 and ":" or "");
			k = k + 1;
		end
	end
	return out .. "]";
end

-- The host as a client connects to it; nil where a client refuses the URL.
local function parse_host(h)
	if h:sub(1, 1) == "[" then
		if h:sub(-1) ~= "]" then return nil; end
		return parse_ipv6(h:sub(2, -2));
	end
	h = map_host_characters(percent_decode(h)):lower();
	-- WHATWG forbidden domain code points.
	if h == "" or h:find("[%c #%%/:<>%?@%[\\%]%^|]") then return nil; end
	if ends_in_number(h) then return parse_ipv4(h); end
	-- `host.` is the same DNS name as `host` (WHATWG keeps the dot; the
	-- resolver, and so the download, does not care).
	return (h:gsub("%.$", ""));
end

-- Parses an http(s) URL as a client would. Returns nil, or { scheme, host,
-- port (always a number), segments (the path, canonical), query, fragment }.
-- Path segments: escapes of unreserved characters decoded, `.` and `..`
-- resolved, `\` taken as `/` (as for any special scheme), and empty
-- segments dropped (`//` reaches the same file behind most proxies).
function url.parse(s)
	local scheme, rest = s:match("^(%a[%w+%-.]*):(.*)$");
	if not scheme then return nil; end
	scheme = scheme:lower();
	local default = DEFAULT_PORT[scheme];
	if not default then return nil; end
	-- Any number of slashes, even none, may separate scheme and host.
	rest = rest:gsub("^[/\\]*", "");
	local authority, tail = rest:match("^([^/\\%?#]*)(.*)$");
	-- Whatever precedes the last `@` is userinfo; the client still connects
	-- to the host after it.
	local host_port = authority:match("^.*@(.*)$") or authority;
	local host, port;
	if host_port:sub(1, 1) == "[" then
		host, port = host_port:match("^(%[[^%]]*%])(.*)$");
		if not host then return nil; end
	else
		host, port = host_port:match("^([^:]*)(.*)$");
	end
	if port ~= "" then
		port = port:match("^:(%d*)$");
		if not port then return nil; end
	end
	if port == "" then
		port = default;
	else
		port = tonumber((port:gsub("^0+(%d)", "%1")));
		if port > 65535 then return nil; end
	end
	host = parse_host(host);
	if not host then return nil; end
	local path, query, fragment = tail, nil, nil;
	local hash = path:find("#", 1, true);
	if hash then path, fragment = path:sub(1, hash - 1), path:sub(hash + 1); end
	local q = path:find("?", 1, true);
	if q then path, query = path:sub(1, q - 1), path:sub(q + 1); end
	local segments = {};
	for _, seg in ipairs(split((path:gsub("\\", "/")), "/")) do
		seg = normalise_escapes(seg);
		if seg == ".." then
			table.remove(segments);
		elseif seg ~= "." and seg ~= "" then
			table.insert(segments, seg);
		end
	end
	return { scheme = scheme, host = host, port = port, segments = segments,
		query = query, fragment = fragment };
end

-- A matcher for links under mftd's public URL; nil if it is not http(s).
function url.matcher(prefix)
	local p = url.parse(prefix);
	if not p then return nil; end
	return { base = p, spelling = (prefix:gsub("/+$", "")) };
end

-- resource, name, fragment (or nil) when `s` downloads one of mftd's files:
-- <public URL>/<resource>/<name>[?query][#fragment].
function url.match(m, s)
	local u, p = url.parse(s), m.base;
	if not u or u.host ~= p.host then return nil; end
	local same_origin = u.scheme == p.scheme and u.port == p.port;
	-- An HTTPS service on the default port usually redirects plain http on
	-- port 80 to itself keeping path and query: that spelling downloads too.
	local redirected = p.scheme == "https" and p.port == 443 and u.scheme == "http" and u.port == 80;
	if not (same_origin or redirected) then return nil; end
	local n = #p.segments;
	if #u.segments ~= n + 2 then return nil; end
	for i = 1, n do
		if u.segments[i] ~= p.segments[i] then return nil; end
	end
	local resource, name = u.segments[n + 1], u.segments[n + 2];
	if not resource:match("^[%w%-%._~]+$") then return nil; end
	return resource, name, u.fragment;
end

-- Unicode white space a client's linkifier stops at, as UTF-8: U+0085,
-- U+00A0, U+1680, U+2000..200A, U+2028, U+2029, U+202F, U+205F, U+3000.
local UNICODE_SPACES = { "\194[\133\160]", "\225\154\128", "\226\128[\128-\138\168\169\175]",
	"\226\129\159", "\227\128\128" };

-- Trailing sentence punctuation, and a closing bracket without its opening
-- one, is left to the text as linkifiers do, so that "see
-- https://…/report.pdf." still links to report.pdf. Returns the new end.
local TRAILING = "[%.,:;!%?%*_~]";
local OPENING = { [")"] = "%(", ["]"] = "%[", ["}"] = "{" };
local function trim_link(text, s, e)
	local link = text:sub(s, e);
	local open, close = {}, {};
	for c, o in pairs(OPENING) do
		open[c] = select(2, link:gsub(o, ""));
		close[c] = select(2, link:gsub("%" .. c, ""));
	end
	while e > s do
		local c = text:sub(e, e);
		if c:match(TRAILING) then
			e = e - 1;
		elseif open[c] and open[c] < close[c] then
			close[c] = close[c] - 1;
			e = e - 1;
		else
			break;
		end
	end
	return e;
end

-- A link that starts inside another one is tried on at most INNER_LIMIT
-- bytes, and at most INNER_BUDGET bytes of a text go to such tries: a text
-- full of "http:" would otherwise cost quadratic time. Past the budget, the
-- rest of that stretch of text is not searched for inner links.
local INNER_LIMIT, INNER_BUDGET = 2048, 64 * 1024;

-- Each of mftd's links in `text`: { first, last, resource, name, fragment }.
-- Every `http:`/`https:` (any case) starts a candidate, also one inside a
-- link that is not ours (https://elsewhere/?u=https://ours/…), since a
-- client or a user may still pick it out. With `whole`, the text is a URL
-- element or attribute (XEP-0066 <url/>, XEP-0447 target), which a client
-- parses whole: leading and trailing spaces and controls dropped, tabs and
-- newlines inside removed (WHATWG).
function url.links(m, text, whole)
	if whole then
		local cleaned = text:gsub("^[%c ]+", ""):gsub("[%c ]+$", ""):gsub("[\t\n\r]", "");
		local resource, name, fragment = url.match(m, cleaned);
		if resource then
			return { { first = 1, last = #text, resource = resource, name = name, fragment = fragment } };
		end
	end
	local found, lower = {}, text:lower();
	local from, run_end, budget = 1, nil, INNER_BUDGET;
	while true do
		local s = lower:find("https?:", from);
		if not s then break; end
		local inner = run_end and s <= run_end;
		if inner and budget <= 0 then
			from, run_end = run_end + 1, nil;
			s = lower:find("https?:", from);
			if not s then break; end
			inner = false;
		end
		if inner then
			budget = budget - INNER_LIMIT;
		else
			-- A link runs to white space, a control character or one of
			-- <>"' (ASCII), or to Unicode white space.
			run_end = (text:find("[%c <>\"']", s) or #text + 1) - 1;
			local run = text:sub(s, run_end);
			for _, space in ipairs(UNICODE_SPACES) do
				local at = run:find(space);
				if at and s + at - 2 < run_end then run_end = s + at - 2; end
			end
		end
		local e = trim_link(text, s, inner and math.min(run_end, s + INNER_LIMIT) or run_end);
		local resource, name, fragment = url.match(m, text:sub(s, e));
		if resource and inner and e < run_end then
			-- Ours: take its whole length, not the part tried.
			e = trim_link(text, s, run_end);
			resource, name, fragment = url.match(m, text:sub(s, e));
		end
		if resource then
			table.insert(found, { first = s, last = e, resource = resource, name = name, fragment = fragment });
			from, run_end = e + 1, nil;
		else
			from = s + 1;
		end
	end
	return found;
end

-- The distinct resources `text` links to.
function url.resources(m, text, whole)
	local seen, list = {}, {};
	for _, link in ipairs(url.links(m, text, whole)) do
		if not seen[link.resource] then
			seen[link.resource] = true;
			table.insert(list, link.resource);
		end
	end
	return list;
end

-- `text` with each of mftd's links in mftd's own spelling carrying only
-- the claim `claim_for(resource)` gives: any earlier claim (someone else's,
-- when a URL is forwarded) and any other query is dropped.
function url.rewrite(m, text, claim_for, whole)
	local out, pos = {}, 1;
	for _, link in ipairs(url.links(m, text, whole)) do
		table.insert(out, text:sub(pos, link.first - 1));
		table.insert(out, m.spelling .. "/" .. link.resource .. "/" .. link.name
			.. "?for=" .. claim_for(link.resource)
			.. (link.fragment and "#" .. link.fragment or ""));
		pos = link.last + 1;
	end
	table.insert(out, text:sub(pos));
	return table.concat(out);
end

-- Loaded outside Prosody (the tests): hand the functions over and stop.
if type(module) ~= "table" or type(module.get_option_string) ~= "function" then
	return url;
end
---------------------------------------------------------------------------

local st = require "util.stanza";
local jid = require "util.jid";
local hashes = require "util.hashes";
local base64 = require "util.encodings".base64;
local new_id = require "util.id".short;
local datetime = require "util.datetime";
local filters = require "util.filters";

local component = module:get_option_string("mftd_component");
local prefix = module:get_option_string("mftd_url_prefix");
local key = module:get_option_string("mftd_share_key");
if not (component and prefix and key) then
	module:log("error", "mod_mftd needs mftd_component, mftd_url_prefix and mftd_share_key; it stays inactive");
	return;
end
local links = url.matcher(prefix);
if not links then
	module:log("error", "mftd_url_prefix %q is not an http or https URL; mod_mftd stays inactive", prefix);
	return;
end

local NS_SHARE = "urn:mftd:share:0";

local function b64url(s)
	return (base64.encode(s):gsub("%+", "-"):gsub("/", "_"):gsub("=+$", ""));
end

-- Must match mftd's upload-http/src/claim.rs.
local function claim(resource, recipient)
	local mac = hashes.hmac_sha256(key, "mftd-recipient-v1\n" .. resource .. "\n" .. recipient);
	return b64url(recipient) .. "." .. b64url(mac:sub(1, 16));
end

-- The elements whose text may carry a URL, each with whether that text is
-- a URL as a whole (XEP-0066 <url/>) rather than free text (<body/>).
local function text_carriers(stanza)
	local carriers = {};
	local body = stanza:get_child("body");
	if body then table.insert(carriers, { tag = body, whole = false }); end
	for oob in stanza:childtags("x", "jabber:x:oob") do
		local oob_url = oob:get_child("url");
		if oob_url then table.insert(carriers, { tag = oob_url, whole = true }); end
	end
	return carriers;
end

-- XEP-0447 <url-data target='…'/> inside <file-sharing><sources>.
local function source_targets(stanza)
	local found = {};
	for fs in stanza:childtags("file-sharing", "urn:xmpp:sfs:0") do
		local sources = fs:get_child("sources");
		if sources then
			for ud in sources:childtags("url-data", "http://jabber.org/protocol/url-data") do
				table.insert(found, ud);
			end
		end
	end
	return found;
end

local function resources_in(stanza)
	local seen, list = {}, {};
	local function scan(text, whole)
		for _, resource in ipairs(url.resources(links, text or "", whole)) do
			if not seen[resource] then
				seen[resource] = true;
				table.insert(list, resource);
			end
		end
	end
	for _, c in ipairs(text_carriers(stanza)) do scan(c.tag:get_text(), c.whole); end
	for _, ud in ipairs(source_targets(stanza)) do scan(ud.attr.target, true); end
	return list;
end

local function chat_type_of(stanza)
	if stanza.attr.type ~= "groupchat" then
		return "im";
	end
	local room_jid = jid.bare(stanza.attr.to);
	local host = prosody.hosts[jid.host(room_jid)];
	local muc = host and host.modules and host.modules.muc;
	local room = muc and muc.get_room_from_jid and muc.get_room_from_jid(room_jid);
	if room and room:get_persistent() then
		return "persistent";
	end
	return "groupchat";
end

-- Share reports mftd did not take (it was away, restarting, or asked us to
-- slow down) wait in a queue kept in Prosody's own storage, oldest first,
-- and go again with back-off: each report carries the message's own time,
-- so a late report dates the share correctly. The queue is bounded; when it
-- is full the oldest report is dropped with an error in the log.
local queue_max = module:get_option_number("mftd_share_queue_max", 10000);
local queue_store = module:open_store("mftd_share_queue");
local QUEUE_KEY = "pending";
local RETRY_MIN, RETRY_MAX = 2, 30;
local queue = queue_store:get(QUEUE_KEY) or {};
local retry_in, flushing, timer_set = RETRY_MIN, false, false;

local function save_queue()
	local ok, err = queue_store:set(QUEUE_KEY, #queue > 0 and queue or nil);
	if not ok and err then
		module:log("error", "cannot save the queue of share reports: %s", tostring(err));
	end
end

local function share_iq(share)
	return st.iq({ type = "set", from = module.host, to = component, id = new_id() })
		:tag("share", { xmlns = NS_SHARE, resource = share.resource, sender = share.sender,
			recipient = share.recipient, ["chat-type"] = share.kind, stamp = share.stamp });
end

-- mftd away or busy: worth trying again. Anything else (a malformed or
-- refused report) would be refused again.
local function worth_retrying(err)
	return err.type == "wait";
end

-- Sends one report; `done(err)` gets nil once mftd recorded it. Prosody
-- 0.12 hands an error that the router itself sends back (the component is
-- not connected) to the success path: look at the reply's type.
local function send_share(share, done)
	module:send_iq(share_iq(share)):next(function (event)
		local reply = event and event.stanza;
		if reply and reply.attr.type == "error" then
			local kind, condition, text = reply:get_error();
			done({ type = kind, condition = condition, text = text });
		else
			done(nil);
		end
	end, function (err)
		done(err or { type = "wait", condition = "undefined-condition" });
	end);
end

local function describe(err)
	return tostring(err.text or err.condition or err);
end

local flush;

local function schedule_flush()
	if timer_set then return; end
	timer_set = true;
	module:add_timer(retry_in, function ()
		timer_set = false;
		flush();
	end);
	retry_in = math.min(retry_in * 2, RETRY_MAX);
end

-- Sends the oldest queued report; on success the next, until the queue is
-- empty or mftd is away again.
flush = function ()
	if flushing or #queue == 0 then return; end
	flushing = true;
	local share = queue[1];
	send_share(share, function (err)
		flushing = false;
		if err and worth_retrying(err) then
			schedule_flush();
			return;
		end
		if err then
			module:log("warn", "mftd refused a queued share of %s: %s; dropped", share.resource, describe(err));
		end
		table.remove(queue, 1);
		save_queue();
		retry_in = RETRY_MIN;
		if #queue == 0 then
			module:log("info", "all queued share reports delivered to mftd");
		end
		flush();
	end);
end

local function enqueue(share)
	if #queue >= queue_max then
		local dropped = table.remove(queue, 1);
		module:log("error", "share report queue full (%d, mftd_share_queue_max): dropped the share of %s by %s",
			queue_max, dropped.resource, dropped.sender);
	end
	table.insert(queue, share);
	save_queue();
	schedule_flush();
end

local function report(share)
	if #queue > 0 then
		-- Keep the order: behind what is already waiting.
		enqueue(share);
		return;
	end
	send_share(share, function (err)
		if err and worth_retrying(err) then
			module:log("warn", "mftd did not take the share of %s (%s); queued, will retry", share.resource, describe(err));
			enqueue(share);
		elseif err then
			module:log("warn", "mftd refused the share of %s: %s", share.resource, describe(err));
		end
	end);
end

-- A local user sent a message: report each of our files in it.
local function report_shares(event)
	local stanza, origin = event.stanza, event.origin;
	if stanza.attr.type == "error" or not stanza.attr.to then return; end
	local resources = resources_in(stanza);
	if #resources == 0 then return; end
	local sender = origin.full_jid or stanza.attr.from;
	local recipient = jid.bare(stanza.attr.to);
	local kind = chat_type_of(stanza);
	local stamp = datetime.datetime(os.time());
	for _, resource in ipairs(resources) do
		report({ resource = resource, sender = sender, recipient = recipient, kind = kind, stamp = stamp });
	end
end

local function set_text(tag, text)
	for i = #tag, 1, -1 do tag[i] = nil; end
	tag.tags = {};
	table.insert(tag, text);
end

-- Rewrites, in place, every mftd link in `message` (a copy) to carry
-- `recipient`'s claim.
local function claim_links(message, recipient)
	local function claim_for(resource) return claim(resource, recipient); end
	for _, c in ipairs(text_carriers(message)) do
		local text = c.tag:get_text();
		if text then set_text(c.tag, url.rewrite(links, text, claim_for, c.whole)); end
	end
	for _, ud in ipairs(source_targets(message)) do
		ud.attr.target = url.rewrite(links, ud.attr.target or "", claim_for, true);
	end
end

-- A message is being delivered to a local user: give them their own URLs.
-- This runs before mod_offline, mod_mam and mod_carbons see the message
-- (their handlers have lower priorities), so the copy stored offline, the
-- copy in the recipient's archive and the `received` carbons to their other
-- resources all carry the recipient's claim.
local function claim_urls(event)
	local stanza = event.stanza;
	if stanza.attr.type == "error" or not stanza.attr.to then return; end
	if #resources_in(stanza) == 0 then return; end
	-- The same stanza object may go on to other recipients (MUC occupants):
	-- rewrite a copy and hand that one on.
	local copy = st.clone(stanza);
	claim_links(copy, jid.bare(stanza.attr.to));
	event.stanza = copy;
end

-- Copies of a message that reach a client wrapped in another one, as
-- XEP-0297 <forwarded/>: XEP-0280 carbons (<sent/>, <received/>) and
-- XEP-0313 archive results (<result/>). mod_carbons makes `sent` carbons
-- from the message as the sender wrote it, and mod_mam answers a query
-- from the archive as stored (the sender's own copy unclaimed); both hand
-- them straight to the session, past the message/* hooks. So every message
-- a client session is sent is looked into here, and each forwarded message
-- gets the claim of the session's own user: the person who can click it.
-- A forwarded copy is never a share: it is not sent by a user, and a share
-- is only reported from pre-message/*.
local NS_FORWARD = "urn:xmpp:forward:0";

local function forwarded_messages(stanza)
	local found = {};
	for _, wrapper in ipairs(stanza.tags) do
		for _, fwd in ipairs(wrapper.tags) do
			if fwd.name == "forwarded" and fwd.attr.xmlns == NS_FORWARD then
				for _, inner in ipairs(fwd.tags) do
					if inner.name == "message" then table.insert(found, inner); end
				end
			end
		end
	end
	return found;
end

local function claim_forwarded(stanza, session)
	if stanza.name ~= "message" or not session.username then return stanza; end
	local wanted = false;
	for _, inner in ipairs(forwarded_messages(stanza)) do
		if #resources_in(inner) > 0 then wanted = true; break; end
	end
	if not wanted then return stanza; end
	-- mod_carbons sends one carbon object to each of the user's resources:
	-- rewrite a copy.
	local copy = st.clone(stanza);
	local owner = jid.join(session.username, session.host);
	for _, inner in ipairs(forwarded_messages(copy)) do
		claim_links(inner, owner);
	end
	return copy;
end

-- Ahead of mod_smacks' queue (priority -999), so a resent copy is claimed too.
local FILTER_PRIORITY = 10;

local function watch_session(session)
	filters.add_filter(session, "stanzas/out", claim_forwarded, FILTER_PRIORITY);
end

module:hook("resource-bind", function (event) watch_session(event.session); end);

local function each_session(f)
	local host = prosody.hosts[module.host];
	for _, user in pairs(host and host.sessions or {}) do
		for _, session in pairs(user.sessions or {}) do f(session); end
	end
end

-- Loaded or reloaded while users are online: watch their sessions too.
each_session(watch_session);

function module.unload()
	each_session(function (session)
		filters.remove_filter(session, "stanzas/out", claim_forwarded);
	end);
end

module:hook("pre-message/bare", report_shares, 10);
module:hook("pre-message/full", report_shares, 10);
module:hook("pre-message/host", report_shares, 10);
module:hook("message/bare", claim_urls, 10);
module:hook("message/full", claim_urls, 10);

module:log("info", "mod_mftd: reporting shares to %s, claiming URLs under %s", component, prefix);
if #queue > 0 then
	module:log("info", "%d share reports queued from before; delivering them to mftd", #queue);
	schedule_flush();
end

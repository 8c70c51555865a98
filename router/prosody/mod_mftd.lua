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
--    mftd, so mftd can log who fetched the file.
--
-- Messages without mftd URLs are not touched. Encrypted payloads (OMEMO) carry
-- no readable URL and pass unchanged.
--
-- Configuration (in the VirtualHost section or globally):
--   mftd_component  = "upload.example.test"        -- mftd's component JID
--   mftd_url_prefix = "https://upload.example.test:5443/"  -- [http] public_url
--   mftd_share_key  = "…"                          -- [recipients] share_key

local st = require "util.stanza";
local jid = require "util.jid";
local hashes = require "util.hashes";
local base64 = require "util.encodings".base64;
local new_id = require "util.id".short;

local component = module:get_option_string("mftd_component");
local prefix = module:get_option_string("mftd_url_prefix");
local key = module:get_option_string("mftd_share_key");
if not (component and prefix and key) then
	module:log("error", "mod_mftd needs mftd_component, mftd_url_prefix and mftd_share_key; it stays inactive");
	return;
end
prefix = prefix:gsub("/+$", "");

local NS_SHARE = "urn:mftd:share:0";

local function pattern_escape(s)
	return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"));
end

-- <prefix>/<resource>/<file name>[?for=<claim>]
local url_pattern = pattern_escape(prefix) .. "/([%w%-_%.]+)/([^%s<>\"'?#]+)(%??[%w%-_%.=&]*)";

local function b64url(s)
	return (base64.encode(s):gsub("%+", "-"):gsub("/", "_"):gsub("=+$", ""));
end

-- Must match mftd's upload-http/src/claim.rs.
local function claim(resource, recipient)
	local mac = hashes.hmac_sha256(key, "mftd-recipient-v1\n" .. resource .. "\n" .. recipient);
	return b64url(recipient) .. "." .. b64url(mac:sub(1, 16));
end

-- The elements whose text may carry a URL.
local function text_carriers(stanza)
	local carriers = {};
	local body = stanza:get_child("body");
	if body then table.insert(carriers, body); end
	for oob in stanza:childtags("x", "jabber:x:oob") do
		local url = oob:get_child("url");
		if url then table.insert(carriers, url); end
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
	local function scan(text)
		for resource in (text or ""):gmatch(url_pattern) do
			if not seen[resource] then
				seen[resource] = true;
				table.insert(list, resource);
			end
		end
	end
	for _, tag in ipairs(text_carriers(stanza)) do scan(tag:get_text()); end
	for _, ud in ipairs(source_targets(stanza)) do scan(ud.attr.target); end
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

-- A local user sent a message: report each of our files in it.
local function report_shares(event)
	local stanza, origin = event.stanza, event.origin;
	if stanza.attr.type == "error" or not stanza.attr.to then return; end
	local resources = resources_in(stanza);
	if #resources == 0 then return; end
	local sender = origin.full_jid or stanza.attr.from;
	local recipient = jid.bare(stanza.attr.to);
	local kind = chat_type_of(stanza);
	for _, resource in ipairs(resources) do
		local iq = st.iq({ type = "set", from = module.host, to = component, id = new_id() })
			:tag("share", { xmlns = NS_SHARE, resource = resource, sender = sender,
				recipient = recipient, ["chat-type"] = kind });
		module:send_iq(iq):catch(function (err)
			module:log("warn", "mftd did not record the share of %s: %s", resource, tostring(err and err.text or err));
		end);
	end
end

local function set_text(tag, text)
	for i = #tag, 1, -1 do tag[i] = nil; end
	tag.tags = {};
	table.insert(tag, text);
end

-- A message is being delivered to a local user: give them their own URLs.
local function claim_urls(event)
	local stanza = event.stanza;
	if stanza.attr.type == "error" or not stanza.attr.to then return; end
	local recipient = jid.bare(stanza.attr.to);
	local function rewrite(text)
		return (text:gsub(url_pattern, function (resource, name)
			return prefix .. "/" .. resource .. "/" .. name .. "?for=" .. claim(resource, recipient);
		end));
	end
	if #resources_in(stanza) == 0 then return; end
	-- The same stanza object may go on to other recipients (MUC occupants):
	-- rewrite a copy and hand that one on.
	local copy = st.clone(stanza);
	for _, tag in ipairs(text_carriers(copy)) do
		local text = tag:get_text();
		if text then set_text(tag, rewrite(text)); end
	end
	for _, ud in ipairs(source_targets(copy)) do
		ud.attr.target = rewrite(ud.attr.target or "");
	end
	event.stanza = copy;
end

module:hook("pre-message/bare", report_shares, 10);
module:hook("pre-message/full", report_shares, 10);
module:hook("pre-message/host", report_shares, 10);
module:hook("message/bare", claim_urls, 10);
module:hook("message/full", claim_urls, 10);

module:log("info", "mod_mftd: reporting shares to %s, claiming URLs under %s", component, prefix);

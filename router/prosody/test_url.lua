-- Unit tests of mod_mftd.lua's link recognition, without Prosody:
--   lua5.4 router/prosody/test_url.lua
-- Loaded outside Prosody, mod_mftd.lua returns its pure URL functions.
-- router/ejabberd/mod_mftd_tests.erl runs the same cases against the
-- ejabberd module.

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or ".";
local url = dofile(here .. "/mod_mftd.lua");

local passed, failed = 0, 0;
local function check(name, got, want)
	if got == want then
		passed = passed + 1;
	else
		failed = failed + 1;
		print(("FAIL %s\n  got:  %s\n  want: %s"):format(name, tostring(got), tostring(want)));
	end
end

local A = url.matcher("https://upload.example.test:5443/");
local B = url.matcher("http://127.0.0.1:5443/upload/");
local C = url.matcher("https://upload.example.test");          -- default port
local C2 = url.matcher("https://upload.example.test:443/");    -- default port spelt out
local D = url.matcher("http://[::1]:5443/");

-- Matches: the link gives resource RES and name a.txt.
local function ours(m, mname, link)
	local resource, name = url.match(m, link);
	check(mname .. " matches " .. link, (resource or "nil") .. " " .. (name or "nil"), "RES a.txt");
end
local function not_ours(m, mname, link)
	check(mname .. " does not match " .. link, url.match(m, link), nil);
end

-- The probe's spellings and their kin.
for _, link in ipairs({
	"https://upload.example.test:5443/RES/a.txt",
	"HTTPS://upload.example.test:5443/RES/a.txt",
	"hTTpS://upload.example.test:5443/RES/a.txt",
	"https://upload.example.test:05443/RES/a.txt",
	"https://upload.example.test:0005443/RES/a.txt",
	"https://UPLOAD.Example.TEST:5443/RES/a.txt",
	"https://upload.example.test.:5443/RES/a.txt",
	"https://alice:secret@upload.example.test:5443/RES/a.txt",
	"https://evil.test@upload.example.test:5443/RES/a.txt",
	"https://a@b@upload.example.test:5443/RES/a.txt",
	"https://upload.example.test:5443/RES/a.txt?for=alice-claim",
	"https://upload.example.test:5443/RES/a.txt#frag",
	"https:\\\\upload.example.test:5443\\RES\\a.txt",
	"https:upload.example.test:5443/RES/a.txt",
	"https:///upload.example.test:5443/RES/a.txt",
	"https://upload.example.test:5443/x/../RES/./a.txt",
	"https://upload.example.test:5443/RES/%2e/a.txt",
	"https://upload.example.test:5443//RES//a.txt",
	"https://upload.example.test:5443/%52ES/a.txt",
	"https://upload.example.test:5443/RES/%61.txt",
	"https://%75pload.example.test:5443/RES/a.txt",
	"https://\239\189\149\239\189\144load.example.test:5443/RES/a.txt",  -- full-width "up"
	"https://up\194\173load.example.test:5443/RES/a.txt",                -- soft hyphen
	"https://upload\227\128\130example.test:5443/RES/a.txt",             -- ideographic full stop
}) do ours(A, "A", link); end

for _, link in ipairs({
	"http://127.0.0.1:5443/upload/RES/a.txt",
	"HTTP://127.0.0.1:5443/upload/RES/a.txt",
	"http://127.0.0.1:05443/upload/RES/a.txt",
	"http://127.1:5443/upload/RES/a.txt",
	"http://127.0.1:5443/upload/RES/a.txt",
	"http://2130706433:5443/upload/RES/a.txt",
	"http://0x7f.0.0.1:5443/upload/RES/a.txt",
	"http://0X7F.1:5443/upload/RES/a.txt",
	"http://0x7f000001:5443/upload/RES/a.txt",
	"http://0177.0.0.1:5443/upload/RES/a.txt",
	"http://017700000001:5443/upload/RES/a.txt",
	"http://127.0.0.1.:5443/upload/RES/a.txt",
	"http://%31%32%37.1:5443/upload/RES/a.txt",
	"http://\239\188\145\239\188\146\239\188\151.0.0.1:5443/upload/RES/a.txt",  -- full-width 127
	"http://evil@127.0.0.1:5443/upload/RES/a.txt",
	"http://[::ffff:127.0.0.1]:5443/upload/RES/a.txt",
	"http://[::ffff:7f00:1]:5443/upload/RES/a.txt",
	"http://127.0.0.1:5443/%75pload/RES/a.txt",
	"http://127.0.0.1:5443/upload/RES/a.txt?for=alice-claim",
}) do ours(B, "B", link); end

for _, link in ipairs({
	"https://upload.example.test/RES/a.txt",
	"https://upload.example.test:443/RES/a.txt",
	"https://upload.example.test:0443/RES/a.txt",
	"https://upload.example.test:/RES/a.txt",
	-- Plain http on port 80 is redirected to https with path and query.
	"http://upload.example.test/RES/a.txt",
	"http://upload.example.test:80/RES/a.txt",
}) do ours(C, "C", link); ours(C2, "C2", link); end

for _, link in ipairs({
	"http://[::1]:5443/RES/a.txt",
	"http://[0:0:0:0:0:0:0:1]:5443/RES/a.txt",
	"http://[0000::0001]:05443/RES/a.txt",
	"HTTP://[::0:1]:5443/RES/a.txt",
}) do ours(D, "D", link); end

-- Other places, and things that are not URLs a client would fetch.
for _, link in ipairs({
	"https://other.example.test:5443/RES/a.txt",
	"https://upload.example.test:5444/RES/a.txt",
	"https://upload.example.test/RES/a.txt",
	"http://upload.example.test:5443/RES/a.txt",
	"ftp://upload.example.test:5443/RES/a.txt",
	"https://upload.example.test.evil.com:5443/RES/a.txt",
	"https://upload.example.test.evil.com/RES/a.txt",
	"https://upload.example.testx:5443/RES/a.txt",
	"https://xupload.example.test:5443/RES/a.txt",
	"https://upload.example.test:5443.evil.com/RES/a.txt",
	"https://upload.example.test:5443@evil.com/RES/a.txt",
	"https://upload.example.test:5443/RES",
	"https://upload.example.test:5443/RES/",
	"https://upload.example.test:5443/RES/a/b.txt",
	"https://upload.example.test:5443/R%20S/a.txt",
	"https://upload.example.test:65536/RES/a.txt",
	"https://upload.example.test:54x3/RES/a.txt",
	"https://upload.example..test:5443/RES/a.txt",
	"https://upload.example.test:5443?RES/a.txt",
	"https://upload.example.test:5443#/RES/a.txt",
	"https://:5443/RES/a.txt",
	"https://up load.example.test:5443/RES/a.txt",
}) do not_ours(A, "A", link); end

for _, link in ipairs({
	"http://127.0.0.1:5443/uploads/RES/a.txt",
	"http://127.0.0.1:5443/upload-x/RES/a.txt",
	"http://127.0.0.1:5443/uploadRES/a.txt",
	"http://127.0.0.1:5443/UPLOAD/RES/a.txt",
	"http://127.0.0.1:5443/other/RES/a.txt",
	"http://127.0.0.1:5443/RES/a.txt",
	"http://127.0.0.1:5443/upload/x/RES/a.txt",
	"http://127.0.0.2:5443/upload/RES/a.txt",
	"http://127.0.0.1.evil.com:5443/upload/RES/a.txt",
	"http://256.0.0.1:5443/upload/RES/a.txt",
	"http://127.0.0.0.1:5443/upload/RES/a.txt",
	"http://0128.0.0.1:5443/upload/RES/a.txt",
	"http://08.0.0.1:5443/upload/RES/a.txt",
	"http://127.0.0.1:5443/upload/../RES/a.txt",
	"https://127.0.0.1:5443/upload/RES/a.txt",
}) do not_ours(B, "B", link); end

not_ours(C, "C", "https://upload.example.test:5443/RES/a.txt");
not_ours(C, "C", "http://upload.example.test:443/RES/a.txt");
not_ours(D, "D", "http://[::2]:5443/RES/a.txt");
not_ours(D, "D", "http://127.0.0.1:5443/RES/a.txt");
not_ours(D, "D", "http://[::1:5443/RES/a.txt");

-- Hosts canonically.
for _, case in ipairs({
	{ "http://127.1/", "127.0.0.1" }, { "http://2130706433/", "127.0.0.1" },
	{ "http://0x7f.0.0.1/", "127.0.0.1" }, { "http://0177.0.0.1/", "127.0.0.1" },
	{ "http://127.0.0.1./", "127.0.0.1" }, { "http://0x/", "0.0.0.0" },
	{ "http://Example.TEST./", "example.test" }, { "http://[0:0:0:0:0:0:0:1]/", "[::1]" },
	{ "http://[2001:DB8:0:0:1:0:0:1]/", "[2001:db8::1:0:0:1]" },
	{ "http://[1:0:0:2:0:0:0:3]/", "[1:0:0:2::3]" }, { "http://[1::]/", "[1::]" },
	{ "http://[::ffff:192.0.2.1]/", "192.0.2.1" }, { "http://[::192.0.2.1]/", "[::c000:201]" },
}) do
	local u = url.parse(case[1]);
	check("host of " .. case[1], u and u.host, case[2]);
end
check("port of :05443", url.parse("http://h:05443/").port, 5443);
check("default port", url.parse("HTTPS://h/").port, 443);
check("[1:2] is refused", url.parse("http://[1:2]/"), nil);
check("[::1%eth0] is refused", url.parse("http://[::1%25eth0]/"), nil);

-- Free text: several links, punctuation around them, a link that is not
-- ours and one inside a link that is not ours.
local function bob(resource) return "bob-claim-" .. resource; end
local text = "Files: https://upload.example.test:5443/R1/a.pdf, "
	.. "(HTTPS://UPLOAD.example.test:05443/R2/b.png) and "
	.. "<https://upload.example.test:5443/R3/c.txt?for=alice-claim>. "
	.. "Not https://elsewhere.test/R4/d.txt but \"https://evil@upload.example.test.:5443/R5/e.txt\"! "
	.. "Also https://elsewhere.test/?u=https://upload.example.test:5443/R6/f.txt; "
	.. "https://upload.example.test:5443/R1/a.pdf?for=alice-claim again.";
check("resources in text", table.concat(url.resources(A, text), ","), "R1,R2,R3,R5,R6");
check("text rewritten", url.rewrite(A, text, bob),
	"Files: https://upload.example.test:5443/R1/a.pdf?for=bob-claim-R1, "
	.. "(https://upload.example.test:5443/R2/b.png?for=bob-claim-R2) and "
	.. "<https://upload.example.test:5443/R3/c.txt?for=bob-claim-R3>. "
	.. "Not https://elsewhere.test/R4/d.txt but \"https://upload.example.test:5443/R5/e.txt?for=bob-claim-R5\"! "
	.. "Also https://elsewhere.test/?u=https://upload.example.test:5443/R6/f.txt?for=bob-claim-R6; "
	.. "https://upload.example.test:5443/R1/a.pdf?for=bob-claim-R1 again.");
check("bracketed name keeps its bracket",
	url.rewrite(A, "(see https://upload.example.test:5443/R/a(1).pdf)", bob),
	"(see https://upload.example.test:5443/R/a(1).pdf?for=bob-claim-R)");
check("link right after text, ends at a Unicode space",
	url.rewrite(A, "x:https://upload.example.test:5443/R/a.txt\194\160next", bob),
	"x:https://upload.example.test:5443/R/a.txt?for=bob-claim-R\194\160next");
check("link ends at a newline",
	url.rewrite(B, "a\nhttp://127.1:5443/upload/R/a.txt\nb", bob),
	"a\nhttp://127.0.0.1:5443/upload/R/a.txt?for=bob-claim-R\nb");
local plain = "see the minutes & <tags> ?for=x in the usual place, http: and https://";
check("text without links unchanged", url.rewrite(A, plain, bob), plain);
check("no resources in plain text", #url.resources(A, plain), 0);

-- Claims: whatever claim or query a link carries, the recipient's copy
-- carries only the recipient's claim, in mftd's own spelling.
check("alice's claim replaced by bob's",
	url.rewrite(A, "https://upload.example.test:5443/RES/a.txt?for=alice-claim", bob),
	"https://upload.example.test:5443/RES/a.txt?for=bob-claim-RES");
check("alice's claim in another spelling replaced by bob's",
	url.rewrite(B, "HTTP://0x7f.1:05443/upload/RES/a.txt?x=1&for=alice-claim&for=carol#frag", bob),
	"http://127.0.0.1:5443/upload/RES/a.txt?for=bob-claim-RES#frag");
check("prefix spelling kept as configured",
	url.rewrite(C, "http://UPLOAD.example.test:80/RES/a%7eb%20c.txt", bob),
	"https://upload.example.test/RES/a~b%20c.txt?for=bob-claim-RES");
check("a bare (unclaimed) link gets a claim",
	url.rewrite(A, "https://upload.example.test:5443/RES/a.txt", bob),
	"https://upload.example.test:5443/RES/a.txt?for=bob-claim-RES");

-- A URL element or attribute is parsed whole, as a client does.
check("whole value with spaces and newlines",
	url.rewrite(A, " https://upload.exa\nmple.test:5443/RES/a.txt?for=alice-claim\n", bob, true),
	"https://upload.example.test:5443/RES/a.txt?for=bob-claim-RES");
check("whole value that is text falls back to a scan",
	url.rewrite(A, "look: https://upload.example.test:5443/RES/a.txt", bob, true),
	"look: https://upload.example.test:5443/RES/a.txt?for=bob-claim-RES");
check("whole value not ours unchanged",
	url.rewrite(A, "https://elsewhere.test/RES/a.txt?for=alice", bob, true),
	"https://elsewhere.test/RES/a.txt?for=alice");

-- Links inside other links are found, but a message full of "http:" costs
-- linear time, not quadratic (inner tries have a budget).
check("link after 20 http: found",
	table.concat(url.resources(A, string.rep("http:", 20) .. "https://upload.example.test:5443/RES/a.txt"), ","), "RES");
local started = os.clock();
url.resources(A, string.rep("http:", 50000) .. "https://upload.example.test:5443/RES/a.txt");
url.resources(A, string.rep("https://x/", 25000));
check("many candidates, none ours", #url.resources(A, string.rep("http: ", 40000)), 0);
check("many links", #url.resources(A, string.rep("https://upload.example.test:5443/RES/a.txt ", 5000)), 1);
check("scanning 1 MB of candidates stays fast", os.clock() - started < 5, true);

print(("%d passed, %d failed"):format(passed, failed));
os.exit(failed == 0 and 0 or 1);

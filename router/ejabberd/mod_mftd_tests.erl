%%% eunit tests of mod_mftd.erl's link recognition and of the pure parts
%%% of its queue of share reports, without ejabberd running:
%%% scripts/test-router-modules.sh compiles mod_mftd.erl with -DTEST (which
%%% exports these functions) and runs these. The link cases are the same as
%%% router/prosody/test_url.lua's.
-module(mod_mftd_tests).

-include("xmpp.hrl").

%% eunit's header (assert macros, auto-export) comes with erlang-dev, which
%% a router machine need not have; eunit itself (erlang-eunit, installed
%% with ejabberd) runs plain test funs. So: the few macros used, by hand.
-define(_test(Body), fun() -> Body end).
-define(_assertEqual(Want, Expr), fun() -> assert_equal(Want, Expr) end).
-define(_assertMatch(Pattern, Expr),
        fun() -> case Expr of Pattern -> ok; Other -> erlang:error({no_match, ??Pattern, Other}) end end).
-define(assertEqual(Want, Expr), assert_equal(Want, Expr)).
-define(assert(Expr), assert_equal(true, Expr)).

-export([a_ours_test_/0, b_ours_test_/0, c_ours_test_/0, d_ours_test_/0, a_not_ours_test_/0,
         b_not_ours_test_/0, others_not_ours_test_/0, hosts_test_/0, text_test_/0,
         claim_test_/0, whole_test_/0, cost_test_/0, file_sharing_test_/0,
         stamp_test_/0, retry_test_/0, queue_bound_test_/0, outcome_test_/0, share_el_test_/0]).

assert_equal(Want, Want) -> ok;
assert_equal(Want, Got) -> erlang:error({not_equal, [{want, Want}, {got, Got}]}).

a() -> mod_mftd:url_matcher(<<"https://upload.example.test:5443/">>).
b() -> mod_mftd:url_matcher(<<"http://127.0.0.1:5443/upload/">>).
c() -> mod_mftd:url_matcher(<<"https://upload.example.test">>).          % default port
c2() -> mod_mftd:url_matcher(<<"https://upload.example.test:443/">>).    % default port spelt out
d() -> mod_mftd:url_matcher(<<"http://[::1]:5443/">>).

ours(Name, M, Links) ->
    [{<<Name/binary, " matches ", L/binary>>,
      ?_assertMatch({ok, <<"RES">>, <<"a.txt">>, _}, mod_mftd:url_match(M, L))} || L <- Links].

not_ours(Name, M, Links) ->
    [{<<Name/binary, " does not match ", L/binary>>,
      ?_assertEqual(nomatch, mod_mftd:url_match(M, L))} || L <- Links].

%% The probe's spellings and their kin.
a_ours_test_() ->
    ours(<<"A">>, a(),
    [
     <<"https://upload.example.test:5443/RES/a.txt">>,
     <<"HTTPS://upload.example.test:5443/RES/a.txt">>,
     <<"hTTpS://upload.example.test:5443/RES/a.txt">>,
     <<"https://upload.example.test:05443/RES/a.txt">>,
     <<"https://upload.example.test:0005443/RES/a.txt">>,
     <<"https://UPLOAD.Example.TEST:5443/RES/a.txt">>,
     <<"https://upload.example.test.:5443/RES/a.txt">>,
     <<"https://alice:secret@upload.example.test:5443/RES/a.txt">>,
     <<"https://evil.test@upload.example.test:5443/RES/a.txt">>,
     <<"https://a@b@upload.example.test:5443/RES/a.txt">>,
     <<"https://upload.example.test:5443/RES/a.txt?for=alice-claim">>,
     <<"https://upload.example.test:5443/RES/a.txt#frag">>,
     <<"https:\\\\upload.example.test:5443\\RES\\a.txt">>,
     <<"https:upload.example.test:5443/RES/a.txt">>,
     <<"https:///upload.example.test:5443/RES/a.txt">>,
     <<"https://upload.example.test:5443/x/../RES/./a.txt">>,
     <<"https://upload.example.test:5443/RES/%2e/a.txt">>,
     <<"https://upload.example.test:5443//RES//a.txt">>,
     <<"https://upload.example.test:5443/%52ES/a.txt">>,
     <<"https://upload.example.test:5443/RES/%61.txt">>,
     <<"https://%75pload.example.test:5443/RES/a.txt">>,
     <<"https://", 239, 189, 149, 239, 189, 144, "load.example.test:5443/RES/a.txt">>, % full-width "up"
     <<"https://up", 194, 173, "load.example.test:5443/RES/a.txt">>, % soft hyphen
     <<"https://upload", 227, 128, 130, "example.test:5443/RES/a.txt">> % ideographic full stop
    ]).

b_ours_test_() ->
    ours(<<"B">>, b(),
    [
     <<"http://127.0.0.1:5443/upload/RES/a.txt">>,
     <<"HTTP://127.0.0.1:5443/upload/RES/a.txt">>,
     <<"http://127.0.0.1:05443/upload/RES/a.txt">>,
     <<"http://127.1:5443/upload/RES/a.txt">>,
     <<"http://127.0.1:5443/upload/RES/a.txt">>,
     <<"http://2130706433:5443/upload/RES/a.txt">>,
     <<"http://0x7f.0.0.1:5443/upload/RES/a.txt">>,
     <<"http://0X7F.1:5443/upload/RES/a.txt">>,
     <<"http://0x7f000001:5443/upload/RES/a.txt">>,
     <<"http://0177.0.0.1:5443/upload/RES/a.txt">>,
     <<"http://017700000001:5443/upload/RES/a.txt">>,
     <<"http://127.0.0.1.:5443/upload/RES/a.txt">>,
     <<"http://%31%32%37.1:5443/upload/RES/a.txt">>,
     <<"http://", 239, 188, 145, 239, 188, 146, 239, 188, 151, ".0.0.1:5443/upload/RES/a.txt">>, % full-width 127
     <<"http://evil@127.0.0.1:5443/upload/RES/a.txt">>,
     <<"http://[::ffff:127.0.0.1]:5443/upload/RES/a.txt">>,
     <<"http://[::ffff:7f00:1]:5443/upload/RES/a.txt">>,
     <<"http://127.0.0.1:5443/%75pload/RES/a.txt">>,
     <<"http://127.0.0.1:5443/upload/RES/a.txt?for=alice-claim">>
    ]).

%% Plain http on port 80 is redirected to https with path and query.
c_ours_test_() ->
    Links = [
     <<"https://upload.example.test/RES/a.txt">>,
     <<"https://upload.example.test:443/RES/a.txt">>,
     <<"https://upload.example.test:0443/RES/a.txt">>,
     <<"https://upload.example.test:/RES/a.txt">>,
     <<"http://upload.example.test/RES/a.txt">>,
     <<"http://upload.example.test:80/RES/a.txt">>
    ],
    ours(<<"C">>, c(), Links) ++ ours(<<"C2">>, c2(), Links).

d_ours_test_() ->
    ours(<<"D">>, d(),
    [
     <<"http://[::1]:5443/RES/a.txt">>,
     <<"http://[0:0:0:0:0:0:0:1]:5443/RES/a.txt">>,
     <<"http://[0000::0001]:05443/RES/a.txt">>,
     <<"HTTP://[::0:1]:5443/RES/a.txt">>
    ]).

%% Other places, and things that are not URLs a client would fetch.
a_not_ours_test_() ->
    not_ours(<<"A">>, a(),
    [
     <<"https://other.example.test:5443/RES/a.txt">>,
     <<"https://upload.example.test:5444/RES/a.txt">>,
     <<"https://upload.example.test/RES/a.txt">>,
     <<"http://upload.example.test:5443/RES/a.txt">>,
     <<"ftp://upload.example.test:5443/RES/a.txt">>,
     <<"https://upload.example.test.evil.com:5443/RES/a.txt">>,
     <<"https://upload.example.test.evil.com/RES/a.txt">>,
     <<"https://upload.example.testx:5443/RES/a.txt">>,
     <<"https://xupload.example.test:5443/RES/a.txt">>,
     <<"https://upload.example.test:5443.evil.com/RES/a.txt">>,
     <<"https://upload.example.test:5443@evil.com/RES/a.txt">>,
     <<"https://upload.example.test:5443/RES">>,
     <<"https://upload.example.test:5443/RES/">>,
     <<"https://upload.example.test:5443/RES/a/b.txt">>,
     <<"https://upload.example.test:5443/R%20S/a.txt">>,
     <<"https://upload.example.test:65536/RES/a.txt">>,
     <<"https://upload.example.test:54x3/RES/a.txt">>,
     <<"https://upload.example..test:5443/RES/a.txt">>,
     <<"https://upload.example.test:5443?RES/a.txt">>,
     <<"https://upload.example.test:5443#/RES/a.txt">>,
     <<"https://:5443/RES/a.txt">>,
     <<"https://up load.example.test:5443/RES/a.txt">>
    ]).

b_not_ours_test_() ->
    not_ours(<<"B">>, b(),
    [
     <<"http://127.0.0.1:5443/uploads/RES/a.txt">>,
     <<"http://127.0.0.1:5443/upload-x/RES/a.txt">>,
     <<"http://127.0.0.1:5443/uploadRES/a.txt">>,
     <<"http://127.0.0.1:5443/UPLOAD/RES/a.txt">>,
     <<"http://127.0.0.1:5443/other/RES/a.txt">>,
     <<"http://127.0.0.1:5443/RES/a.txt">>,
     <<"http://127.0.0.1:5443/upload/x/RES/a.txt">>,
     <<"http://127.0.0.2:5443/upload/RES/a.txt">>,
     <<"http://127.0.0.1.evil.com:5443/upload/RES/a.txt">>,
     <<"http://256.0.0.1:5443/upload/RES/a.txt">>,
     <<"http://127.0.0.0.1:5443/upload/RES/a.txt">>,
     <<"http://0128.0.0.1:5443/upload/RES/a.txt">>,
     <<"http://08.0.0.1:5443/upload/RES/a.txt">>,
     <<"http://127.0.0.1:5443/upload/../RES/a.txt">>,
     <<"https://127.0.0.1:5443/upload/RES/a.txt">>
    ]).

others_not_ours_test_() ->
    not_ours(<<"C">>, c(), [<<"https://upload.example.test:5443/RES/a.txt">>,
                            <<"http://upload.example.test:443/RES/a.txt">>])
    ++ not_ours(<<"D">>, d(), [<<"http://[::2]:5443/RES/a.txt">>,
                               <<"http://127.0.0.1:5443/RES/a.txt">>,
                               <<"http://[::1:5443/RES/a.txt">>]).

%% parse_url/1 gives #url{scheme, host, port, segments, query, fragment}.
host(Url) -> case mod_mftd:parse_url(Url) of error -> error; U -> element(3, U) end.
port(Url) -> element(4, mod_mftd:parse_url(Url)).

hosts_test_() ->
    [{U, ?_assertEqual(H, host(U))}
     || {U, H} <- [{<<"http://127.1/">>, <<"127.0.0.1">>}, {<<"http://2130706433/">>, <<"127.0.0.1">>},
                   {<<"http://0x7f.0.0.1/">>, <<"127.0.0.1">>}, {<<"http://0177.0.0.1/">>, <<"127.0.0.1">>},
                   {<<"http://127.0.0.1./">>, <<"127.0.0.1">>}, {<<"http://0x/">>, <<"0.0.0.0">>},
                   {<<"http://Example.TEST./">>, <<"example.test">>},
                   {<<"http://[0:0:0:0:0:0:0:1]/">>, <<"[::1]">>},
                   {<<"http://[2001:DB8:0:0:1:0:0:1]/">>, <<"[2001:db8::1:0:0:1]">>},
                   {<<"http://[1:0:0:2:0:0:0:3]/">>, <<"[1:0:0:2::3]">>}, {<<"http://[1::]/">>, <<"[1::]">>},
                   {<<"http://[::ffff:192.0.2.1]/">>, <<"192.0.2.1">>},
                   {<<"http://[::192.0.2.1]/">>, <<"[::c000:201]">>},
                   {<<"http://[1:2]/">>, error}, {<<"http://[::1%25eth0]/">>, error}]]
    ++ [?_assertEqual(5443, port(<<"http://h:05443/">>)),
        ?_assertEqual(443, port(<<"HTTPS://h/">>))].

bob(Resource) -> <<"bob-claim-", Resource/binary>>.

rewrite(M, Text) -> mod_mftd:url_rewrite(M, Text, fun bob/1, false).

%% Free text: several links, punctuation around them, a link that is not
%% ours and one inside a link that is not ours.
text_test_() ->
    Text = <<"Files: https://upload.example.test:5443/R1/a.pdf, "
             "(HTTPS://UPLOAD.example.test:05443/R2/b.png) and "
             "<https://upload.example.test:5443/R3/c.txt?for=alice-claim>. "
             "Not https://elsewhere.test/R4/d.txt but \"https://evil@upload.example.test.:5443/R5/e.txt\"! "
             "Also https://elsewhere.test/?u=https://upload.example.test:5443/R6/f.txt; "
             "https://upload.example.test:5443/R1/a.pdf?for=alice-claim again.">>,
    Plain = <<"see the minutes & <tags> ?for=x in the usual place, http: and https://">>,
    [?_assertEqual([<<"R1">>, <<"R2">>, <<"R3">>, <<"R5">>, <<"R6">>],
                   mod_mftd:url_resources(a(), Text, false)),
     ?_assertEqual(<<"Files: https://upload.example.test:5443/R1/a.pdf?for=bob-claim-R1, "
                     "(https://upload.example.test:5443/R2/b.png?for=bob-claim-R2) and "
                     "<https://upload.example.test:5443/R3/c.txt?for=bob-claim-R3>. "
                     "Not https://elsewhere.test/R4/d.txt but \"https://upload.example.test:5443/R5/e.txt?for=bob-claim-R5\"! "
                     "Also https://elsewhere.test/?u=https://upload.example.test:5443/R6/f.txt?for=bob-claim-R6; "
                     "https://upload.example.test:5443/R1/a.pdf?for=bob-claim-R1 again.">>,
                   rewrite(a(), Text)),
     ?_assertEqual(<<"(see https://upload.example.test:5443/R/a(1).pdf?for=bob-claim-R)">>,
                   rewrite(a(), <<"(see https://upload.example.test:5443/R/a(1).pdf)">>)),
     ?_assertEqual(<<"x:https://upload.example.test:5443/R/a.txt?for=bob-claim-R", 194, 160, "next">>,
                   rewrite(a(), <<"x:https://upload.example.test:5443/R/a.txt", 194, 160, "next">>)),
     ?_assertEqual(<<"a\nhttp://127.0.0.1:5443/upload/R/a.txt?for=bob-claim-R\nb">>,
                   rewrite(b(), <<"a\nhttp://127.1:5443/upload/R/a.txt\nb">>)),
     ?_assertEqual(Plain, rewrite(a(), Plain)),
     ?_assertEqual([], mod_mftd:url_resources(a(), Plain, false))].

%% Claims: whatever claim or query a link carries, the recipient's copy
%% carries only the recipient's claim, in mftd's own spelling.
claim_test_() ->
    [?_assertEqual(<<"https://upload.example.test:5443/RES/a.txt?for=bob-claim-RES">>,
                   rewrite(a(), <<"https://upload.example.test:5443/RES/a.txt?for=alice-claim">>)),
     ?_assertEqual(<<"http://127.0.0.1:5443/upload/RES/a.txt?for=bob-claim-RES#frag">>,
                   rewrite(b(), <<"HTTP://0x7f.1:05443/upload/RES/a.txt?x=1&for=alice-claim&for=carol#frag">>)),
     ?_assertEqual(<<"https://upload.example.test/RES/a~b%20c.txt?for=bob-claim-RES">>,
                   rewrite(c(), <<"http://UPLOAD.example.test:80/RES/a%7eb%20c.txt">>)),
     ?_assertEqual(<<"https://upload.example.test:5443/RES/a.txt?for=bob-claim-RES">>,
                   rewrite(a(), <<"https://upload.example.test:5443/RES/a.txt">>))].

%% A URL element or attribute is parsed whole, as a client does.
whole_test_() ->
    Whole = fun(Text) -> mod_mftd:url_rewrite(a(), Text, fun bob/1, true) end,
    [?_assertEqual(<<"https://upload.example.test:5443/RES/a.txt?for=bob-claim-RES">>,
                   Whole(<<" https://upload.exa\nmple.test:5443/RES/a.txt?for=alice-claim\n">>)),
     ?_assertEqual(<<"look: https://upload.example.test:5443/RES/a.txt?for=bob-claim-RES">>,
                   Whole(<<"look: https://upload.example.test:5443/RES/a.txt">>)),
     ?_assertEqual(<<"https://elsewhere.test/RES/a.txt?for=alice">>,
                   Whole(<<"https://elsewhere.test/RES/a.txt?for=alice">>)),
     ?_assertEqual(<<>>, Whole(<<>>))].

%% Links inside other links are found, but a message full of "http:" costs
%% linear time, not quadratic (inner tries have a budget).
cost_test_() ->
    Link = <<"https://upload.example.test:5443/RES/a.txt">>,
    Rep = fun(B, N) -> binary:copy(B, N) end,
    [?_assertEqual([<<"RES">>], mod_mftd:url_resources(a(), <<(Rep(<<"http:">>, 20))/binary, Link/binary>>, false)),
     {timeout, 60,
      ?_test(begin
                 T0 = erlang:monotonic_time(millisecond),
                 mod_mftd:url_resources(a(), <<(Rep(<<"http:">>, 50000))/binary, Link/binary>>, false),
                 mod_mftd:url_resources(a(), Rep(<<"https://x/">>, 25000), false),
                 ?assertEqual([], mod_mftd:url_resources(a(), Rep(<<"http: ">>, 40000), false)),
                 ?assertEqual([<<"RES">>], mod_mftd:url_resources(a(), Rep(<<Link/binary, " ">>, 5000), false)),
                 ?assert(erlang:monotonic_time(millisecond) - T0 < 10000)
             end)}].

%% XEP-0447 url-data targets, which ejabberd 23.01 leaves as #xmlel{}
%% ({xmlel, Name, Attrs, Children}) in a message's sub_els.
file_sharing_test_() ->
    UrlData = fun(Target) ->
                      {xmlel, <<"url-data">>, [{<<"xmlns">>, <<"http://jabber.org/protocol/url-data">>},
                                               {<<"target">>, Target}], []}
              end,
    FileSharing = fun(Targets) ->
                          {xmlel, <<"file-sharing">>, [{<<"xmlns">>, <<"urn:xmpp:sfs:0">>}],
                           [{xmlel, <<"file">>, [{<<"xmlns">>, <<"urn:xmpp:file:metadata:0">>}], []},
                            {xmlel, <<"sources">>, [], [UrlData(T) || T <- Targets]}]}
                  end,
    Sent = [FileSharing([<<"HTTP://127.1:05443/upload/RES/a.txt?for=alice-claim">>,
                         <<"https://elsewhere.test/x">>]),
            {xmlel, <<"body">>, [], [{xmlcdata, <<"http://127.0.0.1:5443/upload/NOT/a.txt">>}]}],
    Msg = #message{sub_els = Sent},
    Rewrite = fun(T) -> mod_mftd:url_rewrite(b(), T, fun bob/1, true) end,
    [?_assertEqual([<<"HTTP://127.1:05443/upload/RES/a.txt?for=alice-claim">>, <<"https://elsewhere.test/x">>],
                   mod_mftd:targets(Msg)),
     ?_test(begin
                [FS, Body] = mod_mftd:map_targets(Rewrite, Sent),
                ?assertEqual([<<"http://127.0.0.1:5443/upload/RES/a.txt?for=bob-claim-RES">>,
                              <<"https://elsewhere.test/x">>],
                             mod_mftd:targets(#message{sub_els = [FS]})),
                ?assertEqual(lists:last(Sent), Body)
            end)].

%%% The queue of share reports.

%% XEP-0082 date-time in UTC, whole seconds, as mftd parses it.
stamp_test_() ->
    [?_assertEqual(<<"1970-01-01T00:00:00Z">>, mod_mftd:stamp(0)),
     ?_assertEqual(<<"2026-11-26T09:14:03Z">>, mod_mftd:stamp(1795684443)),
     ?_assertEqual(<<"2000-02-29T23:59:59Z">>, mod_mftd:stamp(951868799))].

%% 2 s doubling to 30 s, as the Prosody module.
retry_test_() ->
    Waits = lists:sublist(lists:foldl(fun(_, [W | _] = Acc) -> [mod_mftd:next_retry(W) | Acc] end,
                                      [2], lists:seq(1, 6)), 7),
    [?_assertEqual([2, 4, 8, 16, 30, 30, 30], lists:reverse(Waits))].

%% Bounded: the oldest reports are given up, in order, for the new one.
queue_bound_test_() ->
    Fill = fun(Items, Max) ->
                   lists:foldl(fun(I, {Q, Len, Dropped}) ->
                                       {Q1, Len1, D} = mod_mftd:push(I, Q, Len, Max),
                                       {Q1, Len1, Dropped ++ D}
                               end, {queue:new(), 0, []}, Items)
           end,
    [?_test(begin
                {Q, Len, Dropped} = Fill([a, b, c], 3),
                ?assertEqual({[a, b, c], 3, []}, {queue:to_list(Q), Len, Dropped})
            end),
     ?_test(begin
                {Q, Len, Dropped} = Fill([a, b, c, d, e], 3),
                ?assertEqual({[c, d, e], 3, [a, b]}, {queue:to_list(Q), Len, Dropped})
            end),
     ?_test(begin
                {Q, Len, Dropped} = Fill([a, b], 1),
                ?assertEqual({[b], 1, [a]}, {queue:to_list(Q), Len, Dropped})
            end),
     %% A queue longer than a lowered share_queue_max shrinks to it.
     ?_test(begin
                {Q, Len, Dropped} = mod_mftd:push(e, queue:from_list([a, b, c, d]), 4, 2),
                ?assertEqual({[d, e], 2, [a, b, c]}, {queue:to_list(Q), Len, Dropped})
            end)].

%% Which answers keep a report for another try.
outcome_test_() ->
    Err = fun(Type, Reason) ->
                  #iq{type = error, sub_els = [#stanza_error{type = Type, reason = Reason}]}
          end,
    [?_assertEqual(ok, mod_mftd:outcome(#iq{type = result})),
     ?_assertMatch({retry, <<"wait/resource-constraint">>}, mod_mftd:outcome(Err(wait, 'resource-constraint'))),
     ?_assertMatch({retry, _}, mod_mftd:outcome(Err(wait, 'remote-server-timeout'))),
     %% ejabberd's own bounces when the component vanished mid-way.
     ?_assertMatch({retry, _}, mod_mftd:outcome(Err(cancel, 'remote-server-not-found'))),
     ?_assertMatch({retry, _}, mod_mftd:outcome(timeout)),
     ?_assertMatch({retry, _}, mod_mftd:outcome(not_connected)),
     ?_assertMatch({drop, <<"modify/bad-request">>}, mod_mftd:outcome(Err(modify, 'bad-request'))),
     ?_assertMatch({drop, <<"auth/forbidden">>}, mod_mftd:outcome(Err(auth, forbidden))),
     ?_assertMatch({drop, <<"cancel/service-unavailable">>}, mod_mftd:outcome(Err(cancel, 'service-unavailable'))),
     ?_assertMatch({drop, _}, mod_mftd:outcome(#iq{type = error}))].

%% Every report carries the message's time.
share_el_test_() ->
    Share = #{resource => <<"RES">>, sender => <<"alice@example.test/phone">>,
              recipient => <<"lunch@conference.example.test">>, kind => <<"groupchat">>,
              stamp => <<"2026-11-26T09:14:03Z">>},
    [?_assertEqual({xmlel, <<"share">>,
                    [{<<"xmlns">>, <<"urn:mftd:share:0">>}, {<<"resource">>, <<"RES">>},
                     {<<"sender">>, <<"alice@example.test/phone">>},
                     {<<"recipient">>, <<"lunch@conference.example.test">>},
                     {<<"chat-type">>, <<"groupchat">>}, {<<"stamp">>, <<"2026-11-26T09:14:03Z">>}],
                    []},
                   mod_mftd:share_el(Share))].

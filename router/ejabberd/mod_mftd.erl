%%% mod_mftd: the router-side half of mftd's audit trail, for ejabberd 23.01.
%%%
%%% The same job as router/prosody/mod_mftd.lua: when a local user sends a
%%% message carrying one of mftd's URLs (body, XEP-0066 oob, XEP-0447
%%% url-data target), report the share to the mftd component (file, sender,
%%% recipient, im | groupchat | persistent, the last read from the room's
%%% configuration); and give every local recipient a URL of their own,
%%% `?for=<claim>', the recipient's bare JID signed with the key shared with
%%% mftd (see upload-http/src/claim.rs), also inside XEP-0280 carbons and
%%% XEP-0313 results (the claim of the user the copy is delivered to).
%%%
%%% A link counts as mftd's in every spelling a client's URL parser still
%%% fetches from mftd (`HTTP://', `127.1', `:05443', `user@'…, see below); a
%%% delivered copy carries it in mftd's own spelling with only the
%%% recipient's claim, any claim already on it being dropped.
%%%
%%% Each report carries `stamp', the time the message was sent. A report
%%% mftd does not take (it is not connected, answers with an error of type
%%% `wait', or does not answer in time) waits in a per-host queue that
%%% survives an ejabberd restart, oldest first, and goes again with back-off
%%% (2 s doubling to 30 s, and at once when the component connects); later
%%% reports queue behind it. The queue holds share_queue_max reports; when
%%% full the oldest is dropped with an error in the log. Reports mftd refuses
%%% for good (modify, auth, cancel) are logged and dropped. The same
%%% behaviour as the Prosody module.
%%%
%%% ejabberd.yml:
%%%   modules:
%%%     mod_mftd:
%%%       component: "upload.example.test"
%%%       url_prefix: "https://upload.example.test:8443/"
%%%       share_key: "…"
%%%       share_queue_max: 10000        # optional
-module(mod_mftd).
-behaviour(gen_mod).
-behaviour(gen_server).

-export([start/2, stop/1, reload/3, depends/2, mod_options/1, mod_opt_type/1,
         mod_doc/0, user_send_packet/1, user_receive_packet/1, component_connected/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, code_change/3]).

-include("xmpp.hrl").
-include("mod_muc_room.hrl").

-ifdef(TEST).
%% For mod_mftd_tests: the link recognition and the queue's pure parts,
%% which need no running ejabberd.
-export([parse_url/1, url_matcher/1, url_match/2, url_links/3, url_resources/3,
         url_rewrite/4, targets/1, map_targets/2,
         stamp/1, next_retry/1, push/4, outcome/1, share_el/1]).
-endif.

-define(NS_SHARE, <<"urn:mftd:share:0">>).

%% Back-off of the queue, in seconds; how long mftd has to answer a report.
-define(RETRY_MIN, 2).
-define(RETRY_MAX, 30).
-define(REPLY_TIMEOUT, timer:seconds(15)).

%% The queue of share reports mftd did not take, in mnesia: a disc_copies
%% table lives in ejabberd's spool dir next to ejabberd's own tables, so it
%% survives a restart (mnesia's log is replayed, a crash needs no repair
%% as DETS does), is in `ejabberdctl backup', and a report is added or
%% removed in O(log n) where a term file would be rewritten whole each time.
%% An ordered_set keyed {Host, Node, Seq} keeps each host's reports in the
%% order they came, apart for each cluster node (every node delivers the
%% reports it queued itself, so none goes twice).
-record(mftd_share_queue, {key :: {binary(), node(), non_neg_integer()}, share :: map()}).

-record(qstate, {host :: binary(),
                queue = queue:new() :: queue:queue({term(), map()}),
                len = 0 :: non_neg_integer(),
                max :: pos_integer(),
                next_seq = 0 :: non_neg_integer(),
                retry_in = ?RETRY_MIN :: pos_integer(),
                timer :: undefined | reference(),
                %% The key of the queued report whose answer is awaited.
                sending :: undefined | term()}).

start(Host, Opts) ->
    case url_matcher(gen_mod:get_opt(url_prefix, Opts)) of
        error -> logger:error("mod_mftd: url_prefix is not an http or https URL; no share "
                              "is reported nor URL claimed on ~ts", [Host]);
        _ -> ok
    end,
    case catch jid:decode(gen_mod:get_opt(component, Opts)) of
        #jid{luser = <<>>, lresource = <<>>, lserver = S} when S /= <<>> -> ok;
        _ -> logger:error("mod_mftd: component is not a domain name; shares on ~ts are queued "
                          "and never delivered", [Host])
    end,
    ejabberd_mnesia:create(?MODULE, mftd_share_queue,
                           [{disc_copies, [node()]}, {type, ordered_set},
                            {attributes, record_info(fields, mftd_share_queue)}]),
    ejabberd_hooks:add(user_send_packet, Host, ?MODULE, user_send_packet, 50),
    ejabberd_hooks:add(user_receive_packet, Host, ?MODULE, user_receive_packet, 50),
    ejabberd_hooks:add(component_connected, ?MODULE, component_connected, 50),
    gen_mod:start_child(?MODULE, Host, Opts).

stop(Host) ->
    ejabberd_hooks:delete(user_send_packet, Host, ?MODULE, user_send_packet, 50),
    ejabberd_hooks:delete(user_receive_packet, Host, ?MODULE, user_receive_packet, 50),
    case gen_mod:is_loaded_elsewhere(Host, ?MODULE) of
        false -> ejabberd_hooks:delete(component_connected, ?MODULE, component_connected, 50);
        true -> ok
    end,
    gen_mod:stop_child(?MODULE, Host).

reload(Host, NewOpts, _OldOpts) ->
    gen_server:cast(proc(Host), {max, gen_mod:get_opt(share_queue_max, NewOpts)}).

depends(_Host, _Opts) -> [].
mod_doc() -> #{desc => <<"Reports file shares to mftd and signs per-recipient download URLs.">>}.

mod_opt_type(component) -> econf:binary();
mod_opt_type(url_prefix) -> econf:binary();
mod_opt_type(share_key) -> econf:binary();
mod_opt_type(share_queue_max) -> econf:pos_int().

mod_options(_Host) ->
    [{component, <<>>}, {url_prefix, <<>>}, {share_key, <<>>}, {share_queue_max, 10000}].

proc(Host) -> gen_mod:get_module_proc(Host, ?MODULE).

opt(Host, Name) -> gen_mod:get_module_opt(Host, ?MODULE, Name).

-define(NS_SFS, <<"urn:xmpp:sfs:0">>).
-define(NS_URL_DATA, <<"http://jabber.org/protocol/url-data">>).

%% The matcher for mftd's links (url_matcher/1 below), or error when
%% url_prefix is not an http(s) URL.
matcher(Host) -> url_matcher(opt(Host, url_prefix)).

%% XEP-0447 <file-sharing><sources><url-data target='…'/>: ejabberd 23.01
%% has no codec for it, so these elements stay #xmlel{} in sub_els.
targets(#message{sub_els = Els}) ->
    [fxml:get_tag_attr_s(<<"target">>, UD)
     || #xmlel{name = <<"file-sharing">>} = FS <- Els, ns(FS) == ?NS_SFS,
        #xmlel{name = <<"sources">>} = Sources <- FS#xmlel.children,
        #xmlel{name = <<"url-data">>} = UD <- Sources#xmlel.children, ns(UD) == ?NS_URL_DATA].

%% Els with Fun applied to each url-data target.
map_targets(Fun, Els) -> [map_file_sharing(Fun, E) || E <- Els].

map_file_sharing(Fun, #xmlel{name = <<"file-sharing">>, children = Cs} = FS) ->
    case ns(FS) of
        ?NS_SFS -> FS#xmlel{children = [map_sources(Fun, C) || C <- Cs]};
        _ -> FS
    end;
map_file_sharing(_, E) -> E.

map_sources(Fun, #xmlel{name = <<"sources">>, children = Cs} = S) ->
    S#xmlel{children = [map_url_data(Fun, C) || C <- Cs]};
map_sources(_, E) -> E.

map_url_data(Fun, #xmlel{name = <<"url-data">>} = UD) ->
    case {ns(UD), fxml:get_tag_attr_s(<<"target">>, UD)} of
        {?NS_URL_DATA, T} when T =/= <<>> -> fxml:replace_tag_attr(<<"target">>, Fun(T), UD);
        _ -> UD
    end;
map_url_data(_, E) -> E.

ns(El) -> fxml:get_tag_attr_s(<<"xmlns">>, El).

texts(#message{} = Msg) ->
    Body = xmpp:get_text(Msg#message.body),
    Oob = case xmpp:get_subtag(Msg, #oob_x{}) of
              #oob_x{url = U} -> U;
              false -> <<>>
          end,
    {Body, Oob}.

resources(Host, Msg) ->
    case matcher(Host) of
        error -> [];
        M ->
            {Body, Oob} = texts(Msg),
            lists:usort(url_resources(M, Body, false) ++ url_resources(M, Oob, true)
                        ++ lists:append([url_resources(M, T, true) || T <- targets(Msg)]))
    end.

b64url(Bin) -> base64url:encode(Bin).

claim(Host, Resource, Recipient) ->
    Mac = crypto:mac(hmac, sha256, opt(Host, share_key),
                     <<"mftd-recipient-v1\n", Resource/binary, "\n", Recipient/binary>>),
    <<(b64url(Recipient))/binary, ".", (b64url(binary:part(Mac, 0, 16)))/binary>>.

chat_type(#message{type = groupchat, to = To}) ->
    case mod_muc:find_online_room(To#jid.luser, To#jid.lserver) of
        {ok, Pid} ->
            case catch mod_muc_room:get_config(Pid) of
                {ok, #config{persistent = true}} -> <<"persistent">>;
                _ -> <<"groupchat">>
            end;
        _ -> <<"groupchat">>
    end;
chat_type(_) -> <<"im">>.

%% A local user sent a message: report each of mftd's files in it.
user_send_packet({#message{type = T, to = #jid{} = To, from = From} = Msg, State} = Acc)
  when T /= error ->
    Host = maps:get(lserver, State),
    case resources(Host, Msg) of
        [] -> ok;
        Rs ->
            Sender = jid:encode(From),
            Recipient = jid:encode(jid:remove_resource(To)),
            Kind = chat_type(Msg),
            Stamp = stamp(erlang:system_time(second)),
            lists:foreach(
              fun(R) ->
                      gen_server:cast(proc(Host), {report, #{resource => R, sender => Sender,
                                                             recipient => Recipient, kind => Kind,
                                                             stamp => Stamp}})
              end, Rs)
    end,
    Acc;
user_send_packet(Acc) -> Acc.

%% A message is delivered to a local user: give them their own URLs. This
%% runs (priority 50) before mod_carboncopy (89) and mod_mam (88), so the
%% `received' carbons to the user's other resources and the copy in their
%% archive carry the user's claim. Copies wrapped in XEP-0297 <forwarded/>
%% (XEP-0280 carbons, XEP-0313 results) get it inside: mod_carboncopy makes
%% `sent' carbons from the message as the sender wrote it, and routes them
%% to the sender's other resources through this hook. Offline messages
%% (mod_offline) are routed to the user when they come online and pass
%% here too. None of these is a share: shares come from user_send_packet.
user_receive_packet({#message{type = T, to = #jid{} = To} = Msg, State} = Acc)
  when T /= error ->
    Host = maps:get(lserver, State),
    case matcher(Host) of
        error -> Acc;
        M ->
            Recipient = jid:encode(jid:remove_resource(To)),
            Msg1 = claim_message(Host, M, Recipient, Msg),
            Els = [claim_wrapped(Host, M, Recipient, El) || El <- Msg1#message.sub_els],
            {Msg1#message{sub_els = Els}, State}
    end;
user_receive_packet(Acc) -> Acc.

%% Msg with every mftd link in its body, XEP-0066 URL and XEP-0447 targets
%% carrying Recipient's claim; Msg itself when it has none.
claim_message(Host, M, Recipient, Msg) ->
    case resources(Host, Msg) of
        [] -> Msg;
        _ ->
            ClaimFor = fun(Resource) -> claim(Host, Resource, Recipient) end,
            Body = [Text#text{data = url_rewrite(M, D, ClaimFor, false)}
                    || #text{data = D} = Text <- Msg#message.body],
            Msg1 = Msg#message{body = Body},
            Msg2 = case xmpp:get_subtag(Msg1, #oob_x{}) of
                       #oob_x{url = U} = Oob ->
                           xmpp:set_subtag(Msg1, Oob#oob_x{url = url_rewrite(M, U, ClaimFor, true)});
                       false -> Msg1
                   end,
            Els = map_targets(fun(Target) -> url_rewrite(M, Target, ClaimFor, true) end,
                              Msg2#message.sub_els),
            Msg2#message{sub_els = Els}
    end.

%% A carbon or an archive result: the message it forwards, claimed.
claim_wrapped(Host, M, R, #carbons_sent{forwarded = F} = C) ->
    C#carbons_sent{forwarded = claim_forwarded(Host, M, R, F)};
claim_wrapped(Host, M, R, #carbons_received{forwarded = F} = C) ->
    C#carbons_received{forwarded = claim_forwarded(Host, M, R, F)};
claim_wrapped(Host, M, R, #mam_result{sub_els = Els} = Res) ->
    Res#mam_result{sub_els = [claim_wrapped(Host, M, R, E) || E <- Els]};
claim_wrapped(Host, M, R, #forwarded{} = F) -> claim_forwarded(Host, M, R, F);
claim_wrapped(_, _, _, El) -> El.

claim_forwarded(Host, M, R, #forwarded{sub_els = Els} = F) ->
    F#forwarded{sub_els = [case E of
                               #message{} -> claim_message(Host, M, R, E);
                               _ -> E
                           end || E <- Els]};
claim_forwarded(_, _, _, F) -> F.

%%% ---------------------------------------------------------------------
%%% Reporting shares to mftd, and the queue of the reports it did not take.
%%%
%%% One process per host (a gen_mod child) sends the reports. A report goes
%%% at once while nothing is queued; if mftd does not take it, it joins the
%%% queue (in mnesia, see #mftd_share_queue{}), and so does every report
%%% that comes while something is queued, to keep the order. The oldest
%%% queued report is sent alone; once mftd answered it, the next one.

%% XEP-0082 date-time (UTC, whole seconds) of a system time in seconds.
stamp(Seconds) ->
    list_to_binary(calendar:system_time_to_rfc3339(Seconds, [{unit, second}, {offset, "Z"}])).

%% The wait after a wait of Seconds: 2, 4, 8, 16, 30, 30…
next_retry(Seconds) -> min(Seconds * 2, ?RETRY_MAX).

%% Item added behind the Len items of Queue, which holds at most Max:
%% {Queue1, Len1, Dropped}, Dropped the oldest items given up for it,
%% oldest first.
push(Item, Queue, Len, Max) -> drop_oldest(queue:in(Item, Queue), Len + 1, Max, []).

drop_oldest(Queue, Len, Max, Dropped) when Len > Max ->
    {{value, Oldest}, Queue1} = queue:out(Queue),
    drop_oldest(Queue1, Len - 1, Max, [Oldest | Dropped]);
drop_oldest(Queue, Len, _, Dropped) -> {Queue, Len, lists:reverse(Dropped)}.

%% What to do with a report, given mftd's answer: ok (recorded), {retry, Why}
%% (mftd away or busy: worth trying again) or {drop, Why} (refused for good:
%% it would be refused again).
outcome(#iq{type = result}) -> ok;
outcome(#iq{type = error} = IQ) ->
    case xmpp:get_error(IQ) of
        #stanza_error{type = wait} = E -> {retry, describe(E)};
        %% Bounced by ejabberd, not answered by mftd: the component went
        %% away while the report was on its way.
        #stanza_error{reason = R} = E when R == 'remote-server-not-found';
                                           R == 'remote-server-timeout' -> {retry, describe(E)};
        #stanza_error{} = E -> {drop, describe(E)};
        undefined -> {drop, <<"an error without a condition">>}
    end;
outcome(timeout) -> {retry, <<"no answer in time">>};
outcome(not_connected) -> {retry, <<"component not connected">>}.

describe(#stanza_error{type = Type, reason = Reason, text = Text}) ->
    R = case Reason of
            A when is_atom(A) -> atom_to_binary(A, utf8);
            Other -> iolist_to_binary(io_lib:format("~p", [element(1, Other)]))
        end,
    T = case xmpp:get_text(Text) of
            <<>> -> <<>>;
            Words -> <<": ", Words/binary>>
        end,
    <<(atom_to_binary(Type, utf8))/binary, "/", R/binary, T/binary>>.

%% The <share/> element of a report.
share_el(#{resource := R, sender := Sender, recipient := Recipient, kind := Kind,
           stamp := Stamp}) ->
    #xmlel{name = <<"share">>,
           attrs = [{<<"xmlns">>, ?NS_SHARE}, {<<"resource">>, R}, {<<"sender">>, Sender},
                    {<<"recipient">>, Recipient}, {<<"chat-type">>, Kind},
                    {<<"stamp">>, Stamp}]}.

%% Sends a report; this process gets {iq_reply, #iq{} | timeout | not_connected, Ctx}.
send(Host, Share, Ctx) ->
    Component = opt(Host, component),
    case catch ejabberd_router:is_my_route(Component) of
        true ->
            IQ = #iq{type = set, from = jid:make(Host), to = jid:decode(Component),
                     sub_els = [share_el(Share)]},
            ejabberd_router:route_iq(IQ, Ctx, self(), ?REPLY_TIMEOUT);
        _ ->
            %% Without the component's own route ejabberd would take its
            %% name for a remote server: a report must not leave for one.
            self() ! {iq_reply, not_connected, Ctx},
            ok
    end.

%% mftd's component (re)connected: deliver what waits without waiting out
%% the back-off.
component_connected(Component) ->
    lists:foreach(
      fun(Host) ->
              case gen_mod:is_loaded(Host, ?MODULE)
                  andalso jid:nameprep(opt(Host, component)) == jid:nameprep(Component) of
                  true -> gen_server:cast(proc(Host), component_connected);
                  false -> ok
              end
      end, ejabberd_option:hosts()).

init([Host, Opts]) ->
    Node = node(),
    Rows = mnesia:dirty_select(mftd_share_queue,
                               [{#mftd_share_queue{key = {Host, Node, '_'}, _ = '_'}, [], ['$_']}]),
    Items = [{K, Share} || #mftd_share_queue{key = K, share = Share}
                               <- lists:keysort(#mftd_share_queue.key, Rows)],
    NextSeq = case Items of
                  [] -> 0;
                  _ -> {{_, _, Last}, _} = lists:last(Items), Last + 1
              end,
    State = #qstate{host = Host, queue = queue:from_list(Items), len = length(Items),
                   max = gen_mod:get_opt(share_queue_max, Opts), next_seq = NextSeq},
    case Items of
        [] -> {ok, State};
        _ ->
            logger:info("mod_mftd: ~B share reports queued from before on ~ts; delivering them to mftd",
                        [length(Items), Host]),
            {ok, schedule(State)}
    end.

handle_call(_Request, _From, State) -> {reply, {error, badarg}, State}.

handle_cast({report, Share}, #qstate{len = 0, host = Host} = State) ->
    send(Host, Share, {direct, Share}),
    {noreply, State};
handle_cast({report, Share}, State) ->
    %% Behind what is already waiting.
    {noreply, enqueue(Share, State)};
handle_cast({max, Max}, State) ->
    {noreply, State#qstate{max = Max}};
handle_cast(component_connected, #qstate{timer = Timer} = State) ->
    case Timer of
        undefined -> ok;
        _ -> erlang:cancel_timer(Timer)
    end,
    {noreply, flush(State#qstate{timer = undefined, retry_in = ?RETRY_MIN})};
handle_cast(_Msg, State) -> {noreply, State}.

handle_info({iq_reply, Reply, {direct, #{resource := R} = Share}}, State) ->
    case outcome(Reply) of
        ok -> {noreply, State};
        {retry, Why} ->
            logger:warning("mod_mftd: mftd did not take the share of ~ts (~ts); queued, will retry",
                           [R, Why]),
            {noreply, enqueue(Share, State)};
        {drop, Why} ->
            logger:warning("mod_mftd: mftd refused the share of ~ts: ~ts", [R, Why]),
            {noreply, State}
    end;
handle_info({iq_reply, Reply, {queued, Key}}, #qstate{sending = Key} = State) ->
    State1 = State#qstate{sending = undefined},
    case outcome(Reply) of
        {retry, _} -> {noreply, schedule(State1)};
        Done ->
            case Done of
                {drop, Why} ->
                    logger:warning("mod_mftd: mftd refused a queued share: ~ts; dropped", [Why]);
                ok -> ok
            end,
            State2 = remove_head(Key, State1#qstate{retry_in = ?RETRY_MIN}),
            case State2#qstate.len of
                0 ->
                    logger:info("mod_mftd: all queued share reports delivered to mftd (~ts)",
                                [State2#qstate.host]),
                    {noreply, State2};
                _ -> {noreply, flush(State2)}
            end
    end;
handle_info(flush, State) ->
    {noreply, flush(State#qstate{timer = undefined})};
handle_info(_Info, State) -> {noreply, State}.

terminate(_Reason, _State) -> ok.
code_change(_OldVsn, State, _Extra) -> {ok, State}.

%% Share queued (in mnesia first) behind the others, the oldest dropped if
%% the queue is full.
enqueue(Share, #qstate{host = Host, queue = Q, len = Len, max = Max, next_seq = Seq} = State) ->
    Key = {Host, node(), Seq},
    mnesia:dirty_write(#mftd_share_queue{key = Key, share = Share}),
    {Q1, Len1, Dropped} = push({Key, Share}, Q, Len, Max),
    lists:foreach(
      fun({K, #{resource := R, sender := Sender}}) ->
              mnesia:dirty_delete(mftd_share_queue, K),
              logger:error("mod_mftd: share report queue full (~B, share_queue_max): dropped the "
                           "share of ~ts by ~ts", [Max, R, Sender])
      end, Dropped),
    schedule(State#qstate{queue = Q1, len = Len1, next_seq = Seq + 1}).

%% The oldest report is done with (unless the queue gave it up meanwhile).
remove_head(Key, #qstate{queue = Q, len = Len} = State) ->
    case queue:peek(Q) of
        {value, {Key, _}} ->
            mnesia:dirty_delete(mftd_share_queue, Key),
            State#qstate{queue = queue:drop(Q), len = Len - 1};
        _ -> State
    end.

%% A try of the oldest report after the current back-off.
schedule(#qstate{timer = undefined, sending = undefined, retry_in = In} = State) ->
    Timer = erlang:send_after(timer:seconds(In), self(), flush),
    State#qstate{timer = Timer, retry_in = next_retry(In)};
schedule(State) -> State.

%% Sends the oldest report, unless one is on its way.
flush(#qstate{sending = undefined, len = Len, queue = Q, host = Host} = State) when Len > 0 ->
    {value, {Key, Share}} = queue:peek(Q),
    send(Host, Share, {queued, Key}),
    State#qstate{sending = Key};
flush(State) -> State.

%%% ---------------------------------------------------------------------
%%% Recognising mftd's links the way a client does.
%%%
%%% A client hands a link to a URL parser (WHATWG in browsers and most
%%% libraries), which accepts many spellings of one address: `HTTP://', an
%%% upper-case host, a trailing dot, `user@' in front of the host, a port
%%% with leading zeros or the scheme's default port spelt out, IPv4 as
%%% `127.1', `2130706433', `0x7f.1' or `0177.0.0.1', IPv6 long or
%%% compressed, dot segments and backslashes in the path. Every spelling that
%%% still downloads one of mftd's files must be reported and claimed, or a
%%% user could forward her own claimed URL in another spelling and the
%%% fetches of its recipients would be logged as hers. So links are parsed
%%% and compared with mftd's public URL (url_prefix) part by part, after
%%% canonicalising both. The same rules as router/prosody/mod_mftd.lua;
%%% mod_mftd_tests.erl runs the same cases.

-define(DEFAULT_PORT(S), case S of <<"http">> -> 80; <<"https">> -> 443; _ -> undefined end).

%% A link starting inside another one is tried on at most ?INNER_LIMIT
%% bytes, and at most ?INNER_BUDGET bytes of a text go to such tries: a text
%% full of "http:" would otherwise cost quadratic time. Past the budget, the
%% rest of that stretch of text is not searched for inner links.
-define(INNER_LIMIT, 2048).
-define(INNER_BUDGET, 65536).

-record(url, {scheme, host, port, segments = [], query, fragment}).

ascii_lower(B) -> << <<(if C >= $A, C =< $Z -> C + 32; true -> C end)>> || <<C>> <= B >>.

hex(C) when C >= $0, C =< $9 -> C - $0;
hex(C) when C >= $a, C =< $f -> C - $a + 10;
hex(C) when C >= $A, C =< $F -> C - $A + 10;
hex(_) -> false.

percent_decode(B) -> percent_decode(B, <<>>).
percent_decode(<<"%", H1, H2, Rest/binary>>, Acc) when is_integer(H1) ->
    case {hex(H1), hex(H2)} of
        {X, Y} when is_integer(X), is_integer(Y) -> percent_decode(Rest, <<Acc/binary, (X * 16 + Y)>>);
        _ -> percent_decode(<<H1, H2, Rest/binary>>, <<Acc/binary, "%">>)
    end;
percent_decode(<<C, Rest/binary>>, Acc) -> percent_decode(Rest, <<Acc/binary, C>>);
percent_decode(<<>>, Acc) -> Acc.

unreserved(C) ->
    (C >= $a andalso C =< $z) orelse (C >= $A andalso C =< $Z) orelse
        (C >= $0 andalso C =< $9) orelse C == $- orelse C == $. orelse C == $_ orelse C == $~.

%% `%41' and `A' are the same to any server (RFC 3986, 6.2.2.2); other
%% escapes only differ in the case of their hex digits.
normalise_escapes(B) -> normalise_escapes(B, <<>>).
normalise_escapes(<<"%", H1, H2, Rest/binary>>, Acc) ->
    case {hex(H1), hex(H2)} of
        {X, Y} when is_integer(X), is_integer(Y) ->
            C = X * 16 + Y,
            case unreserved(C) of
                true -> normalise_escapes(Rest, <<Acc/binary, C>>);
                false -> normalise_escapes(Rest, <<Acc/binary, "%", (ascii_upper(H1)), (ascii_upper(H2))>>)
            end;
        _ -> normalise_escapes(<<H1, H2, Rest/binary>>, <<Acc/binary, "%">>)
    end;
normalise_escapes(<<C, Rest/binary>>, Acc) -> normalise_escapes(Rest, <<Acc/binary, C>>);
normalise_escapes(<<>>, Acc) -> Acc.

ascii_upper(C) when C >= $a, C =< $z -> C - 32;
ascii_upper(C) -> C.

%% The part of UTS #46 (IDNA mapping, run on every host) that turns other
%% characters into ASCII ones: full-width forms, the ideographic full stops,
%% and code points IDNA ignores (soft hyphen, zero-width space, joiners,
%% variation selectors, BOM). What is left that is not ASCII cannot be
%% mftd's (ASCII) host.
map_host_characters(B) ->
    case unicode:characters_to_list(B) of
        Cs when is_list(Cs) ->
            unicode:characters_to_binary(
              [M || C <- Cs, M <- [map_host_character(C)], M =/= ignored]);
        _ -> B      % not UTF-8: left as it is, and not mftd's host
    end.

map_host_character(C) when C >= 16#FF01, C =< 16#FF5E -> C - 16#FEE0;
map_host_character(C) when C == 16#3002; C == 16#FF61 -> $.;
map_host_character(C) when C == 16#AD; C == 16#34F; C >= 16#180B, C =< 16#180D;
                           C == 16#200B; C == 16#2060; C >= 16#FE00, C =< 16#FE0F;
                           C == 16#FEFF -> ignored;
map_host_character(C) -> C.

%% WHATWG "IPv4 number": decimal, 0x hex or 0-prefixed octal.
ipv4_number(<<>>) -> error;
ipv4_number(<<"0", X, Rest/binary>>) when X == $x; X == $X -> ipv4_digits(Rest, 16);
ipv4_number(<<"0", Rest/binary>>) when Rest =/= <<>> -> ipv4_digits(Rest, 8);
ipv4_number(B) -> ipv4_digits(B, 10).

ipv4_digits(<<>>, _) -> {ok, 0};
ipv4_digits(B, Radix) ->
    Digits = [hex(C) || <<C>> <= B],
    case lists:all(fun(D) -> is_integer(D) andalso D < Radix end, Digits) of
        true -> {ok, lists:foldl(fun(D, N) -> min(N * Radix + D, 1 bsl 40) end, 0, Digits)};
        false -> error
    end.

%% WHATWG "ends in a number": such a host is parsed as IPv4 or rejected.
ends_in_number(Host) ->
    Parts = binary:split(Host, <<".">>, [global]),
    Parts1 = case lists:last(Parts) of
                 <<>> when length(Parts) > 1 -> lists:droplast(Parts);
                 _ -> Parts
             end,
    case lists:last(Parts1) of
        <<>> -> false;
        Last -> lists:all(fun(C) -> C >= $0 andalso C =< $9 end, binary_to_list(Last))
                    orelse ipv4_number(Last) =/= error
    end.

%% WHATWG IPv4 parser: `127.1', `2130706433', `0x7f.1', `0177.0.0.1',
%% `127.0.0.1.' all give <<"127.0.0.1">>.
parse_ipv4(Host) ->
    Parts0 = binary:split(Host, <<".">>, [global]),
    Parts = case lists:last(Parts0) of
                <<>> when length(Parts0) > 1 -> lists:droplast(Parts0);
                _ -> Parts0
            end,
    N = length(Parts),
    N =< 4 orelse throw(bad_url),
    Numbers = [case ipv4_number(P) of {ok, V} -> V; error -> throw(bad_url) end || P <- Parts],
    Last = lists:last(Numbers),
    lists:all(fun(V) -> V =< 255 end, lists:droplast(Numbers)) orelse throw(bad_url),
    Last < 1 bsl (8 * (5 - N)) orelse throw(bad_url),
    {Value, _} = lists:foldl(fun(V, {Acc, I}) -> {Acc + (V bsl (8 * (3 - I))), I + 1} end,
                             {Last, 0}, lists:droplast(Numbers)),
    dotted(Value).

dotted(V) ->
    iolist_to_binary(lists:join(".", [integer_to_list((V bsr S) band 255) || S <- [24, 16, 8, 0]])).

%% IPv6 (without brackets), serialised as WHATWG does: lower-case hex, no
%% leading zeros, the first longest run of zero pieces as `::'. An
%% IPv4-mapped address (::ffff:127.0.0.1) reaches the same IPv4 host through
%% a dual-stack socket, so it is returned as that IPv4 address.
parse_ipv6(B) ->
    binary:match(B, <<"%">>) == nomatch orelse throw(bad_url),
    case inet:parse_ipv6strict_address(binary_to_list(B)) of
        {ok, {0, 0, 0, 0, 0, 16#FFFF, Hi, Lo}} -> dotted((Hi bsl 16) bor Lo);
        {ok, Addr} -> ipv6_text(tuple_to_list(Addr));
        _ -> throw(bad_url)
    end.

ipv6_text(Pieces) ->
    {Start, Len} = longest_zero_run(Pieces, 0, none, {none, 1}),
    Hex = fun(P) -> string:lowercase(integer_to_list(P, 16)) end,
    Text = case Start of
               none -> lists:join(":", [Hex(P) || P <- Pieces]);
               _ ->
                   {Before, Rest} = lists:split(Start, Pieces),
                   After = lists:nthtail(Len, Rest),
                   [lists:join(":", [Hex(P) || P <- Before]), "::",
                    lists:join(":", [Hex(P) || P <- After])]
           end,
    iolist_to_binary(["[", Text, "]"]).

%% {first index, length} of the first longest run (of two or more) of zeros.
longest_zero_run([], _, _, Best) -> Best;
longest_zero_run([0 | Rest], I, Run, {_, BestLen} = Best) ->
    {RunStart, RunLen} = case Run of none -> {I, 1}; {S, L} -> {S, L + 1} end,
    NewBest = if RunLen > BestLen -> {RunStart, RunLen}; true -> Best end,
    longest_zero_run(Rest, I + 1, {RunStart, RunLen}, NewBest);
longest_zero_run([_ | Rest], I, _, Best) -> longest_zero_run(Rest, I + 1, none, Best).

%% The host as a client connects to it; throws bad_url where a client
%% refuses the URL.
parse_host(<<"[", _/binary>> = H) ->
    binary:last(H) == $] orelse throw(bad_url),
    parse_ipv6(binary:part(H, 1, byte_size(H) - 2));
parse_host(H0) ->
    H = ascii_lower(map_host_characters(percent_decode(H0))),
    %% WHATWG forbidden domain code points.
    H =/= <<>> orelse throw(bad_url),
    re:run(H, "[\\x00-\\x20\\x7f#%/:<>?@\\[\\\\\\]^|]") == nomatch orelse throw(bad_url),
    case ends_in_number(H) of
        true -> parse_ipv4(H);
        %% `host.' is the same DNS name as `host' (WHATWG keeps the dot; the
        %% resolver, and so the download, does not care).
        false ->
            case binary:last(H) of
                $. -> binary:part(H, 0, byte_size(H) - 1);
                _ -> H
            end
    end.

%% Splits at the first of Chars: {before, from it on}.
split_at(B, Chars) ->
    case binary:match(B, [<<C>> || C <- Chars]) of
        {P, _} -> {binary:part(B, 0, P), binary:part(B, P, byte_size(B) - P)};
        nomatch -> {B, <<>>}
    end.

%% Parses an http(s) URL as a client would: a #url{} (port always a number,
%% the path as canonical segments) or error. Path segments: escapes of
%% unreserved characters decoded, `.' and `..' resolved, `\' taken as `/'
%% (as for any special scheme), and empty segments dropped (`//' reaches the
%% same file behind most proxies).
parse_url(Url) ->
    try parse_url1(Url) catch throw:bad_url -> error end.

parse_url1(Url) ->
    {match, [Scheme0, Rest0]} =
        case re:run(Url, "^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", [{capture, all_but_first, binary}, dotall]) of
            nomatch -> throw(bad_url);
            M -> M
        end,
    Scheme = ascii_lower(Scheme0),
    Default = ?DEFAULT_PORT(Scheme),
    Default =/= undefined orelse throw(bad_url),
    %% Any number of slashes, even none, may separate scheme and host.
    Rest = skip_slashes(Rest0),
    {Authority, Tail} = split_at(Rest, "/\\?#"),
    %% Whatever precedes the last `@' is userinfo; the client still connects
    %% to the host after it.
    HostPort = case binary:matches(Authority, <<"@">>) of
                   [] -> Authority;
                   Ats -> {At, _} = lists:last(Ats),
                          binary:part(Authority, At + 1, byte_size(Authority) - At - 1)
               end,
    {Host0, Port0} = case HostPort of
                         <<"[", _/binary>> ->
                             case binary:match(HostPort, <<"]">>) of
                                 {P, _} -> split_bin(HostPort, P + 1);
                                 nomatch -> throw(bad_url)
                             end;
                         _ -> split_at(HostPort, ":")
                     end,
    Port = case Port0 of
               <<>> -> Default;
               <<":">> -> Default;
               <<":", Digits/binary>> ->
                   lists:all(fun(C) -> C >= $0 andalso C =< $9 end, binary_to_list(Digits))
                       orelse throw(bad_url),
                   N = binary_to_integer(Digits),
                   N =< 65535 orelse throw(bad_url),
                   N;
               _ -> throw(bad_url)
           end,
    Host = parse_host(Host0),
    {PathQuery, Fragment} = case split_at(Tail, "#") of
                                {PQ, <<>>} -> {PQ, undefined};
                                {PQ, <<"#", F/binary>>} -> {PQ, F}
                            end,
    {Path, Query} = case split_at(PathQuery, "?") of
                        {Pa, <<>>} -> {Pa, undefined};
                        {Pa, <<"?", Q/binary>>} -> {Pa, Q}
                    end,
    Segments = lists:foldl(
                 fun(Seg0, Acc) ->
                         case normalise_escapes(Seg0) of
                             <<"..">> -> case Acc of [] -> []; [_ | T] -> T end;
                             <<".">> -> Acc;
                             <<>> -> Acc;
                             Seg -> [Seg | Acc]
                         end
                 end, [], binary:split(Path, [<<"/">>, <<"\\">>], [global])),
    #url{scheme = Scheme, host = Host, port = Port, segments = lists:reverse(Segments),
         query = Query, fragment = Fragment}.

skip_slashes(<<C, Rest/binary>>) when C == $/; C == $\\ -> skip_slashes(Rest);
skip_slashes(B) -> B.

split_bin(B, P) -> {binary:part(B, 0, P), binary:part(B, P, byte_size(B) - P)}.

%% A matcher for links under mftd's public URL: {Parsed, Spelling}, or
%% error if it is not http(s).
url_matcher(Prefix) ->
    case parse_url(Prefix) of
        #url{} = P -> {P, strip_slashes(Prefix)};
        error -> error
    end.

strip_slashes(<<>>) -> <<>>;
strip_slashes(B) ->
    case binary:last(B) of
        $/ -> strip_slashes(binary:part(B, 0, byte_size(B) - 1));
        _ -> B
    end.

%% {ok, Resource, Name, Fragment} when Link downloads one of mftd's files:
%% <public URL>/<resource>/<name>[?query][#fragment]; nomatch otherwise.
url_match({#url{scheme = PS, host = PH, port = PP, segments = Base}, _}, Link) ->
    case parse_url(Link) of
        #url{scheme = S, host = PH, port = Port, segments = Segs, fragment = F} ->
            SameOrigin = S == PS andalso Port == PP,
            %% An HTTPS service on the default port usually redirects plain
            %% http on port 80 to itself keeping path and query: that
            %% spelling downloads too.
            Redirected = PS == <<"https">> andalso PP == 443 andalso S == <<"http">> andalso Port == 80,
            N = length(Base),
            case (SameOrigin orelse Redirected) andalso length(Segs) == N + 2
                andalso lists:prefix(Base, Segs) of
                true ->
                    [Resource, Name] = lists:nthtail(N, Segs),
                    case re:run(Resource, "^[A-Za-z0-9._~-]+$") of
                        {match, _} -> {ok, Resource, Name, F};
                        nomatch -> nomatch
                    end;
                false -> nomatch
            end;
        _ -> nomatch
    end.

%% A link in free text runs to white space, a control character or one of
%% <>"' (ASCII), or to Unicode white space (U+0085, U+00A0, U+1680,
%% U+2000..200A, U+2028, U+2029, U+202F, U+205F, U+3000, as UTF-8).
-define(LINK_STOP, "[\\x00-\\x20\\x7f<>\"']|\\xc2[\\x85\\xa0]|\\xe1\\x9a\\x80"
                   "|\\xe2\\x80[\\x80-\\x8a\\xa8\\xa9\\xaf]|\\xe2\\x81\\x9f|\\xe3\\x80\\x80").

run_end(Text, S) ->
    case re:run(Text, ?LINK_STOP, [{offset, S}]) of
        {match, [{P, _}]} -> P;
        nomatch -> byte_size(Text)
    end.

%% Trailing sentence punctuation, and a closing bracket without its opening
%% one, is left to the text as linkifiers do, so that "see https://…/a.pdf."
%% still links to a.pdf. S and E as byte offsets, E exclusive; the new E.
trim_link(Text, S, E) ->
    Link = binary:part(Text, S, E - S),
    Count = fun(C) -> length(binary:matches(Link, <<C>>)) end,
    Open = #{$) => Count($(), $] => Count($[), $} => Count(${)},
    Close = #{$) => Count($)), $] => Count($]), $} => Count($})},
    trim_link(Text, S, E, Open, Close).

trim_link(Text, S, E, Open, Close) when E - 1 > S ->
    C = binary:at(Text, E - 1),
    case lists:member(C, ".,:;!?*_~") of
        true -> trim_link(Text, S, E - 1, Open, Close);
        false ->
            case maps:find(C, Open) of
                {ok, O} ->
                    case maps:get(C, Close) of
                        Cl when O < Cl -> trim_link(Text, S, E - 1, Open, Close#{C := Cl - 1});
                        _ -> E
                    end;
                error -> E
            end
    end;
trim_link(_, _, E, _, _) -> E.

%% Each of mftd's links in Text: {Start, Length, Resource, Name, Fragment}.
%% Every `http:'/`https:' (any case) starts a candidate, also one inside a
%% link that is not ours (https://elsewhere/?u=https://ours/…), since a
%% client or a user may still pick it out. With Whole = true, the text is a
%% URL element or attribute (XEP-0066 <url/>, XEP-0447 target), which a
%% client parses whole: leading and trailing spaces and controls dropped,
%% tabs and newlines inside removed (WHATWG).
url_links(M, Text, true) ->
    Trimmed = re:replace(Text, "^[\\x00-\\x20\\x7f]+|[\\x00-\\x20\\x7f]+$", "", [global, {return, binary}]),
    Cleaned = re:replace(Trimmed, "[\\t\\n\\r]", "", [global, {return, binary}]),
    case url_match(M, Cleaned) of
        {ok, R, N, F} -> [{0, byte_size(Text), R, N, F}];
        nomatch -> url_links(M, Text, false)
    end;
url_links(M, Text, false) ->
    Starts = case re:run(Text, "[hH][tT][tT][pP][sS]?:", [global, {capture, first, index}]) of
                 {match, Ms} -> [S || [{S, _}] <- Ms];
                 nomatch -> []
             end,
    scan(M, Text, Starts, 0, none, ?INNER_BUDGET, []).

%% From: where the next link may start; RunEnd: end of the stretch the
%% last candidate tried lies in (none after a match or a new stretch).
scan(_, _, [], _, _, _, Acc) -> lists:reverse(Acc);
scan(M, Text, [S | Rest], From, RunEnd, Budget, Acc) when S < From ->
    scan(M, Text, Rest, From, RunEnd, Budget, Acc);
scan(M, Text, [S | Rest], _, RunEnd, Budget, Acc) when is_integer(RunEnd), S < RunEnd, Budget =< 0 ->
    scan(M, Text, [S | Rest], RunEnd, none, Budget, Acc);
scan(M, Text, [S | Rest], _From, RunEnd0, Budget0, Acc) ->
    Inner = is_integer(RunEnd0) andalso S < RunEnd0,
    {RunEnd, Budget, Limit} = case Inner of
                                  true -> {RunEnd0, Budget0 - ?INNER_LIMIT, min(RunEnd0, S + ?INNER_LIMIT)};
                                  false -> R = run_end(Text, S), {R, Budget0, R}
                              end,
    E0 = trim_link(Text, S, Limit),
    {E, Found} = case url_match(M, binary:part(Text, S, E0 - S)) of
                     {ok, _, _, _} when Inner, E0 < RunEnd ->
                         %% Ours: take its whole length, not the part tried.
                         E1 = trim_link(Text, S, RunEnd),
                         {E1, url_match(M, binary:part(Text, S, E1 - S))};
                     Other -> {E0, Other}
                 end,
    case Found of
        {ok, Resource, Name, Fragment} ->
            scan(M, Text, Rest, E, none, Budget, [{S, E - S, Resource, Name, Fragment} | Acc]);
        nomatch ->
            scan(M, Text, Rest, S + 1, RunEnd, Budget, Acc)
    end.

%% The distinct resources Text links to.
url_resources(M, Text, Whole) ->
    lists:usort([R || {_, _, R, _, _} <- url_links(M, Text, Whole)]).

%% Text with each of mftd's links in mftd's own spelling carrying only the
%% claim ClaimFor(Resource) gives: any earlier claim (someone else's, when a
%% URL is forwarded) and any other query is dropped.
url_rewrite({_, Spelling} = M, Text, ClaimFor, Whole) ->
    {Out, Last} =
        lists:foldl(
          fun({S, L, Resource, Name, Fragment}, {Acc, Pos}) ->
                  Frag = case Fragment of undefined -> <<>>; _ -> <<"#", Fragment/binary>> end,
                  Url = <<Spelling/binary, "/", Resource/binary, "/", Name/binary,
                          "?for=", (ClaimFor(Resource))/binary, Frag/binary>>,
                  {<<Acc/binary, (binary:part(Text, Pos, S - Pos))/binary, Url/binary>>, S + L}
          end, {<<>>, 0}, url_links(M, Text, Whole)),
    <<Out/binary, (binary:part(Text, Last, byte_size(Text) - Last))/binary>>.

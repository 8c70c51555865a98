%%% mod_mftd: the router-side half of mftd's audit trail, for ejabberd 23.01.
%%%
%%% The same job as router/prosody/mod_mftd.lua: when a local user sends a
%%% message carrying one of mftd's URLs (body or XEP-0066 oob), report the
%%% share to the mftd component (file, sender, recipient, im | groupchat |
%%% persistent, the last read from the room's configuration); and give every
%%% local recipient a URL of their own, `?for=<claim>`, the recipient's bare
%%% JID signed with the key shared with mftd (see upload-http/src/claim.rs).
%%%
%%% ejabberd.yml:
%%%   modules:
%%%     mod_mftd:
%%%       component: "upload.example.test"
%%%       url_prefix: "https://upload.example.test:5443/"
%%%       share_key: "…"
-module(mod_mftd).
-behaviour(gen_mod).

-export([start/2, stop/1, reload/3, depends/2, mod_options/1, mod_opt_type/1,
         mod_doc/0, user_send_packet/1, user_receive_packet/1]).

-include("xmpp.hrl").
-include("mod_muc_room.hrl").

-define(NS_SHARE, <<"urn:mftd:share:0">>).

start(Host, _Opts) ->
    ejabberd_hooks:add(user_send_packet, Host, ?MODULE, user_send_packet, 50),
    ejabberd_hooks:add(user_receive_packet, Host, ?MODULE, user_receive_packet, 50),
    ok.

stop(Host) ->
    ejabberd_hooks:delete(user_send_packet, Host, ?MODULE, user_send_packet, 50),
    ejabberd_hooks:delete(user_receive_packet, Host, ?MODULE, user_receive_packet, 50),
    ok.

reload(_Host, _NewOpts, _OldOpts) -> ok.
depends(_Host, _Opts) -> [].
mod_doc() -> #{desc => <<"Reports file shares to mftd and signs per-recipient download URLs.">>}.

mod_opt_type(component) -> econf:binary();
mod_opt_type(url_prefix) -> econf:binary();
mod_opt_type(share_key) -> econf:binary().

mod_options(_Host) ->
    [{component, <<>>}, {url_prefix, <<>>}, {share_key, <<>>}].

opt(Host, Name) -> gen_mod:get_module_opt(Host, ?MODULE, Name).

prefix(Host) -> strip_slashes(opt(Host, url_prefix)).

strip_slashes(B) ->
    case binary:last(B) of
        $/ -> strip_slashes(binary:part(B, 0, byte_size(B) - 1));
        _ -> B
    end.

%% <prefix>/<resource>/<name>[?query]: {Start, Length, Resource, Base} for each.
url_regex(Host) ->
    P = re:replace(prefix(Host), "[\\\\^$.|?*+()\\[\\]{}]", "\\\\&", [global, {return, binary}]),
    <<P/binary, "/([A-Za-z0-9._-]+)/([^\\s<>\"'?#]+)(\\?[A-Za-z0-9._=&-]*)?">>.

matches(Host, Text) ->
    case re:run(Text, url_regex(Host), [global, {capture, all, index}]) of
        {match, Ms} ->
            [begin
                 [{S, L} | Groups] = M,
                 [{RS, RL}, {NS, NL} | _] = Groups,
                 Resource = binary:part(Text, RS, RL),
                 Base = <<(prefix(Host))/binary, "/", Resource/binary, "/",
                          (binary:part(Text, NS, NL))/binary>>,
                 {S, L, Resource, Base}
             end || M <- Ms];
        nomatch -> []
    end.

texts(#message{} = Msg) ->
    Body = xmpp:get_text(Msg#message.body),
    Oob = case xmpp:get_subtag(Msg, #oob_x{}) of
              #oob_x{url = U} -> U;
              false -> <<>>
          end,
    {Body, Oob}.

resources(Host, Msg) ->
    {Body, Oob} = texts(Msg),
    lists:usort([R || {_, _, R, _} <- matches(Host, Body) ++ matches(Host, Oob)]).

b64url(Bin) -> base64url:encode(Bin).

claim(Host, Resource, Recipient) ->
    Mac = crypto:mac(hmac, sha256, opt(Host, share_key),
                     <<"mftd-recipient-v1\n", Resource/binary, "\n", Recipient/binary>>),
    <<(b64url(Recipient))/binary, ".", (b64url(binary:part(Mac, 0, 16)))/binary>>.

rewrite(Host, Text, Recipient) ->
    {Out, Last} = lists:foldl(
                    fun({S, L, Resource, Base}, {Acc, Pos}) ->
                            Before = binary:part(Text, Pos, S - Pos),
                            Url = <<Base/binary, "?for=", (claim(Host, Resource, Recipient))/binary>>,
                            {<<Acc/binary, Before/binary, Url/binary>>, S + L}
                    end, {<<>>, 0}, matches(Host, Text)),
    <<Out/binary, (binary:part(Text, Last, byte_size(Text) - Last))/binary>>.

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
            Component = opt(Host, component),
            lists:foreach(
              fun(R) ->
                      Share = #xmlel{name = <<"share">>,
                                     attrs = [{<<"xmlns">>, ?NS_SHARE}, {<<"resource">>, R},
                                              {<<"sender">>, Sender}, {<<"recipient">>, Recipient},
                                              {<<"chat-type">>, Kind}]},
                      ejabberd_router:route(
                        #iq{type = set, id = p1_rand:get_string(),
                            from = jid:make(Host), to = jid:decode(Component),
                            sub_els = [Share]})
              end, Rs)
    end,
    Acc;
user_send_packet(Acc) -> Acc.

%% A message is delivered to a local user: give them their own URLs.
user_receive_packet({#message{type = T, to = #jid{} = To} = Msg, State} = Acc)
  when T /= error ->
    Host = maps:get(lserver, State),
    case resources(Host, Msg) of
        [] -> Acc;
        _ ->
            Recipient = jid:encode(jid:remove_resource(To)),
            Body = [Text#text{data = rewrite(Host, D, Recipient)}
                    || #text{data = D} = Text <- Msg#message.body],
            Msg1 = Msg#message{body = Body},
            Msg2 = case xmpp:get_subtag(Msg1, #oob_x{}) of
                       #oob_x{url = U} = Oob ->
                           xmpp:set_subtag(Msg1, Oob#oob_x{url = rewrite(Host, U, Recipient)});
                       false -> Msg1
                   end,
            {Msg2, State}
    end;
user_receive_packet(Acc) -> Acc.

package commands

import (
	"strings"
	"testing"

	"github.com/daarion/matrix-bridge/pkg/homeserver"
)

func TestAgentCommands(t *testing.T) {
	noRename := func(t *testing.T, r *fakeRig) {
		if len(r.agents.names) != 0 {
			t.Errorf("profiles set: %v", r.agents.names)
		}
	}
	runCommandCases(t, []commandCase{
		// agents
		{name: "agents lists every agent", command: "agents",
			want: []string{"Agents:** 2", "`helper` · `@agent_helper:daarion.test`", "`sofia` — Sofia · `@agent_sofia:daarion.test`"}},
		{name: "agents matches ids and names", command: "agents SOF", want: []string{"Agents matching `sof`:** 1", "`sofia`"},
			absent: []string{"helper"}},
		{name: "agents says when none match", command: "agents zzz", want: []string{"Agents matching `zzz`:** none."}},
		{name: "agents reports a failing table", command: "agents", setup: func(r *fakeRig) { r.agents.fail("List", errDatabase) },
			want: []string{"**Error:** database on fire"}},

		// agent
		{name: "agent by id", command: "agent sofia", want: []string{
			"**Agent `sofia`** — Sofia", "**Matrix:** `@agent_sofia:daarion.test`",
			"**Profile:** display name `Sofia`, avatar `mxc://daarion.test/face`", "**Registered:** ", "(48h0m",
			"**Rooms:** 2: `harbour` (`!harbour:daarion.test`), `!elsewhere:daarion.test`",
			"**Last post:** in `harbour`", "(`$hello`): “Good morning, harbour!”",
		}},
		{name: "agent by Matrix id", command: "agent @agent_sofia:daarion.test", want: []string{"**Agent `sofia`** — Sofia"}},
		{name: "agent by DAARION id", command: "agent agent:sofia", want: []string{"**Agent `sofia`** — Sofia"}},
		{name: "agent without profile, rooms or posts", command: "agent helper", want: []string{
			"**Agent `helper`** — (no display name)", "avatar none", "**Rooms:** unknown (", "**Last post:** none in the last 200000 logged events",
		}},
		{name: "agent of a human", command: "agent @bob:daarion.test", want: []string{"**Error:** @bob:daarion.test is not an agent"}},
		{name: "agent unknown", command: "agent nobody", want: []string{"**Error:** no agent has the id nobody"}},
		{name: "agent reports a failing table", command: "agent sofia", setup: func(r *fakeRig) { r.agents.fail("Get", errDatabase) },
			want: []string{"**Error:** database on fire"}},
		{name: "agent without the event log", command: "agent sofia", setup: func(r *fakeRig) {
			opts := r.b.opts
			opts.EventLog = nil
			r.b = New(opts)
		}, want: []string{"**Agent `sofia`**"}, absent: []string{"Last post"}},
		{name: "agent with a failing event log", command: "agent sofia", setup: func(r *fakeRig) { r.log.fail("LastBy", errDatabase) },
			want: []string{"**Rooms:** 2: `harbour`", "**Last post:** unknown (database on fire)"}},
		{name: "agent with a failing mapping shows room ids", command: "agent sofia",
			setup: func(r *fakeRig) { r.rooms.fail("ByRoomID", errDatabase) },
			want:  []string{"**Rooms:** 2: `!harbour:daarion.test`, `!elsewhere:daarion.test`", "**Last post:** in `!harbour:daarion.test`"}},

		// set-agent-name
		{name: "set-agent-name renames", command: "set-agent-name sofia Sofia the Great",
			want: []string{"**Renamed** agent `sofia` (`@agent_sofia:daarion.test`) to Sofia the Great."},
			check: func(t *testing.T, r *fakeRig) {
				if got := r.agents.names["sofia"]; got != "Sofia the Great" || len(r.agents.names) != 1 {
					t.Errorf("profiles set: %v", r.agents.names)
				}
			}},
		{name: "set-agent-name refuses an empty name", command: `set-agent-name sofia ""`, want: []string{"**Error:** the name is empty"}, check: noRename},
		{name: "set-agent-name refuses a long name", command: "set-agent-name sofia " + strings.Repeat("n", maxDisplayName+1),
			want: []string{"**Error:** the name is longer than 256 characters"}, check: noRename},
		{name: "set-agent-name refuses control characters", command: "set-agent-name sofia bell\abell",
			want: []string{"**Error:** the name has control characters"}, check: noRename},
		{name: "set-agent-name of an unknown agent", command: "set-agent-name nobody Name", want: []string{"**Error:** no agent has the id nobody"}, check: noRename},
		{name: "set-agent-name reports the homeserver's failure", command: "set-agent-name sofia Name",
			setup: func(r *fakeRig) {
				r.agents.fail("SetProfile", homeserver.Failure("setting the display name", errDatabase))
			},
			want: []string{"**Error:** ", "setting the display name"}},
	})
}

// Without the agents parts, the agent commands say so; with the table
// only, the reading ones work.
func TestAgentCommandsWithoutAgents(t *testing.T) {
	r := newFakeRig(t)
	opts := r.b.opts
	opts.Agents, opts.AgentStore = nil, nil
	r.b = New(opts)
	for _, command := range []string{"agents", "agent sofia", "set-agent-name sofia Name"} {
		r.run(command, "**Error:** not available in this process")
	}
	opts.AgentStore = r.agents
	r.b = New(opts)
	r.run("agents", "Agents:** 2")
	r.run("agent sofia", "**Agent `sofia`**")
	r.run("set-agent-name sofia Name", "**Error:** not available in this process")
	if len(r.agents.names) != 0 {
		t.Errorf("profiles set: %v", r.agents.names)
	}
}

package main

import (
	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/config"
	"podwall.io/podwall/sidecar/agent"
	"podwall.io/podwall/sidecar/verdictlog"
)

// options translates the loaded configuration into the agent's options.
func options(c config.Sidecar) agent.Options {
	return agent.Options{
		Pod:          c.Pod.Name,
		Namespace:    c.Pod.Namespace,
		Workload:     c.Pod.Workload,
		PolicyFile:   c.PolicyFile,
		PolicyGen:    agent.PolicyGen{URL: c.PolicyGen.URL, TokenFile: c.PolicyGen.TokenFile, CA: []byte(c.PolicyGen.CA)},
		CacheDir:     c.CacheDir,
		FailOpen:     c.FailMode == config.FailOpen,
		DenyMemo:     c.DenyMemoTimeout,
		QueueNum:     c.Queue.Base,
		QueueCount:   c.Queue.Count,
		MinWorkers:   c.Workers.Min,
		MaxWorkers:   c.Workers.Max,
		MeshOutPorts: c.Mesh.Outbound,
		MeshInPorts:  c.Mesh.Inbound,
		HTTPAddr:     c.ListenAddr,
		AppNetRaw:    c.AppNetRaw,
		DNS: agent.DNS{ResolvConf: c.DNS.ResolvConf, MinTTL: c.DNS.MinTTL, MaxTTL: c.DNS.MaxTTL,
			MaxNames: c.DNS.MaxNames, MaxAddrs: c.DNS.MaxAddrs},
		Memory:   memoryLimit(),
		Config:   reported(c),
		Tunables: tunables(c.Live),
	}
}

// reported is the effective configuration the sidecar reports to policygen.
func reported(c config.Sidecar) policy.SidecarConfig {
	msg := c.FileState.Refused
	if len(msg) > policy.MaxConfigMessage {
		msg = msg[:policy.MaxConfigMessage]
	}
	return policy.SidecarConfig{Mode: c.Live.Mode, FailMode: string(c.FailMode), LogAllows: string(c.Live.Log.Allows),
		LogRate: c.Live.Log.Rate, LogBurst: c.Live.Log.Burst, File: c.FileState.State, Message: msg}
}

func tunables(l config.SidecarLive) agent.Tunables {
	return agent.Tunables{Mode: l.Mode, Log: verdictlog.Options{
		Allows:        verdictlog.Allows(l.Log.Allows),
		FirstInterval: l.Log.AllowInterval,
		Rate:          l.Log.Rate,
		Burst:         l.Log.Burst,
	}}
}

package config

import "fmt"

// checkAccounts resolves every user and group the services name, so that a name missing from
// the passwd or group file the config runs with is a config error at load (with its line),
// not a service that fails at each start and ends in a restart loop.
func (c *Config) checkAccounts(acct Accounts) []problem {
	var ps []problem
	for i, s := range c.Service {
		k := fmt.Sprintf("service[%d]", i)
		check := func(key, name string, lookup func(string) error) {
			if name == "" || lookup == nil {
				return
			}
			if err := lookup(name); err != nil {
				ps = append(ps, problem{key: key, msg: fmt.Sprintf("service %s: %s", quote(s.Name), clip(err.Error()))})
			}
		}
		check(k+".user", s.User, acct.User)
		check(k+".group", s.Group, acct.Group)
		for _, g := range s.SupplementaryGroups {
			check(k+".supplementary_groups", g, acct.Group)
		}
		for j, so := range s.Socket {
			sk := fmt.Sprintf("%s.socket[%d]", k, j)
			check(sk+".owner", so.Owner, acct.User)
			check(sk+".group", so.Group, acct.Group)
		}
	}
	return ps
}

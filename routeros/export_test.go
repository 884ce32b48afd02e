package routeros

// connected reports whether the client holds an SSH connection (it may still break at any
// moment). Only tests ask: to see that New does not dial, and that a broken connection is
// noticed without another command.
func (c *Client) connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil
}

// Connected is connected for the tests of package routeros_test.
func Connected(c *Client) bool { return c.connected() }

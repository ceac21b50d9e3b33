package syncapi

// SetScanLimits shrinks the scan budget and the filtered page size, so that
// tests can reach the budget with a few events.
func (h *Handler) SetScanLimits(budget, page int) {
	h.scanBudget, h.filteredPage = budget, page
}

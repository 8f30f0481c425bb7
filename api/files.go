package api

// FilePut is the answer of PUT /v1/channels/{ch}/files/{path}.
type FilePut struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex; the file's ETag
	Chunks int    `json:"chunks"`
	Index  uint64 `json:"index"` // the Raft index that committed the manifest
}

// FileInfo is a file's manifest as GET .../files/ lists it.
type FileInfo struct {
	Path        string `json:"path"`
	Size        uint64 `json:"size"`
	ContentType string `json:"content_type,omitempty"`
	SHA256      string `json:"sha256"`
	ChunkSize   uint64 `json:"chunk_size"`
	Chunks      int    `json:"chunks"`
	Holders     int    `json:"holders"`
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// FileList is a page of GET /v1/channels/{ch}/files/.
type FileList struct {
	Files []FileInfo `json:"files"`
	More  bool       `json:"more"`
}

// FileDeleted is the answer of DELETE /v1/channels/{ch}/files/{path}.
type FileDeleted struct {
	Path  string `json:"path"`
	Index uint64 `json:"index"`
}
